//! Two-checkpoint alignment on real activations, end to end: two tiny models trained from
//! different seeds, `mmerge statistics A OUT --pair B` (their joint unit moments on the same
//! batches, under `model_units`' names), then B aligned to A by activation matching and by
//! MuDSC-Align on those statistics: the aligned B scores exactly what B scores (zero-shot
//! retrieval through its ITC head, whose input axes move with the residual stream), and its
//! weights moved.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use mmerge_core::Checkpoint;
use mmerge_data::synth::{Scale, SynthConfig, generate};
use mmerge_merge::align::{AlignMethod, align_checkpoints, model_units, read_joint_stats};

fn torch(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_mmerge-torch"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn train(suite: &Path, dir: &Path, seed: u64) {
    let recipe = dir.with_extension("yml");
    std::fs::write(
        &recipe,
        format!(
            "suite: {}\nseed: {seed}\nmodel: {{preset: tiny, sharing: shared}}\n\
             pretrain: {{objectives: {{itc: 1, mlm: 1}}}}\nsteps: 3\nbatch_size: 8\n\
             eval: {{every: 0, test: false}}\ncheckpoint_every: 0\ntensorboard: false\nthreads: 1\n",
            suite.display()
        ),
    )
    .unwrap();
    torch(&[
        "train",
        recipe.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
        "--quiet",
    ]);
}

#[test]
fn pair_statistics_align_two_models_without_changing_what_b_computes() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let suite = d.join("suite");
    generate(&SynthConfig::new(3, Scale::Tiny), &suite, false, false).unwrap();
    let (a, b) = (d.join("a"), d.join("b"));
    train(&suite, &a, 1);
    train(&suite, &b, 2);
    let (a, b) = (a.join("model"), b.join("model"));
    let stats = d.join("stats");
    torch(&[
        "statistics",
        a.to_str().unwrap(),
        stats.to_str().unwrap(),
        "--suite",
        suite.to_str().unwrap(),
        "--pair",
        b.to_str().unwrap(),
        "--batches",
        "3",
        "--batch-size",
        "8",
        "--threads",
        "1",
    ]);
    // Every model unit has its joint moments, under model_units' names.
    let ck = Checkpoint::open(&b).unwrap();
    let keys: Vec<(String, Vec<usize>)> = ck
        .names()
        .iter()
        .map(|n| (n.clone(), ck.meta(n).unwrap().shape.clone()))
        .collect();
    let units = model_units(&keys, 2).unwrap();
    let joint = read_joint_stats(&stats, &units).unwrap();
    assert_eq!(joint.len(), units.len());
    assert!(joint.values().all(|j| j.count > 0.0));
    let score = |model: &Path| {
        torch(&[
            "eval",
            "--checkpoint",
            model.to_str().unwrap(),
            "--task",
            "retrieval",
            "--suite",
            suite.to_str().unwrap(),
        ])
    };
    let before = score(&b);
    for name in ["activation_matching", "mudsc_align"] {
        let method = AlignMethod::from_name(name).unwrap();
        let opts = method.options(None).unwrap();
        let out = d.join(name);
        let s = align_checkpoints(&a, &b, &out, false, method, &opts, Some(&stats)).unwrap();
        assert!(s.tensors_changed > 0, "{name}: nothing moved");
        assert_eq!(
            score(&out),
            before,
            "{name}: the aligned B scores differently"
        );
    }
}
