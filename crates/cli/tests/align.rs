//! `mmerge align` end to end on a tiny synthetic multiway checkpoint: expert mode writes a
//! checkpoint of the same keys and shapes, model mode aligns a checkpoint to itself as the
//! identity, and bad flags are named.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use mmerge_core::{Checkpoint, Dtype};

fn mmerge(args: &[&OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mmerge"))
        .args(args)
        .output()
        .unwrap()
}

/// One layer, vision and text experts (d = 4, 2 heads, f = 6).
fn write_multiway(dir: &Path) {
    let mut t: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut add = |name: String, shape: Vec<usize>| {
        let n: usize = shape.iter().product();
        let x = t.len() as f32;
        let v = (0..n).map(|i| ((i as f32) * 0.37 + x).sin()).collect();
        t.push((name, shape, v));
    };
    add("embeddings.word.weight".into(), vec![10, 4]);
    for e in ["vision", "text"] {
        for p in ["q", "k", "v", "out"] {
            add(format!("encoder.layers.0.attn.{e}.{p}.weight"), vec![4, 4]);
        }
        add(format!("encoder.layers.0.ffn.{e}.fc1.weight"), vec![6, 4]);
        add(format!("encoder.layers.0.ffn.{e}.fc2.weight"), vec![4, 6]);
    }
    let cfg: &[(&str, &[u8])] = &[("config.json", b"{\"num_attention_heads\": 2}")];
    mmerge_core::writer::write_model(dir, Dtype::F32, &t, 1 << 20, cfg).unwrap();
}

#[test]
fn align_runs_both_modes_and_names_bad_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let mw = tmp.path().join("mw");
    write_multiway(&mw);
    let out = tmp.path().join("aligned");
    let o = mmerge(&[
        "align".as_ref(),
        "--method".as_ref(),
        "weight_matching".as_ref(),
        "--experts".as_ref(),
        mw.as_os_str(),
        "--other".as_ref(),
        "text".as_ref(),
        out.as_os_str(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout.starts_with("weight_matching (λ = 1): 3 units"),
        "{stdout}"
    );
    let (a, b) = (
        Checkpoint::open(&mw).unwrap(),
        Checkpoint::open(&out).unwrap(),
    );
    let mut names = b.names().to_vec();
    names.sort();
    let mut want = a.names().to_vec();
    want.sort();
    assert_eq!(names, want);
    for n in a.names() {
        assert_eq!(a.meta(n).unwrap().shape, b.meta(n).unwrap().shape, "{n}");
    }
    assert!(out.join("config.json").is_file());

    // Model mode, a checkpoint against itself: nothing moves.
    let same = tmp.path().join("same");
    let o = mmerge(&[
        "align".as_ref(),
        "--method".as_ref(),
        "mudsc_align".as_ref(),
        "--lambda".as_ref(),
        "1".as_ref(),
        mw.as_os_str(),
        mw.as_os_str(),
        same.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("0 tensors changed"), "{stdout}");

    let fails = |args: &[&str], needle: &str| {
        let mut all: Vec<&OsStr> = vec!["align".as_ref()];
        all.extend(args.iter().map(|a| OsStr::new(*a)));
        let o = mmerge(&all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(needle),
            "{args:?}: {err}"
        );
    };
    let (m, x) = (mw.to_str().unwrap(), out.to_str().unwrap());
    fails(
        &["--method", "rebasin", m, m, x],
        "invalid value 'rebasin' for '--method",
    );
    fails(
        &["--method", "weight_matching", "--lambda", "0.3", m, m, x],
        "--lambda: alignment parameter `lambda` = 0.3",
    );
    fails(
        &["--method", "mudsc_align", "--lambda", "2", m, m, x],
        "--lambda 2",
    );
    fails(&["--method", "weight_matching", m, x], "give A B OUT");
    fails(
        &["--method", "zipit", m, m, x],
        "needs the two models' joint activation statistics",
    );
    fails(
        &[
            "--method",
            "weight_matching",
            "--experts",
            m,
            "--other",
            "text",
            x,
        ],
        "already exists; pass --force to replace it",
    );
    fails(
        &["--method", "weight_matching", "--other", "text", m, m, x],
        "--experts",
    );
}
