//! `mmerge experts` (alias `merge-experts`) end to end: the same bytes as the library call
//! (`mmerge_merge::experts::plan` + `run`), and clear errors for a missing `--base`, an
//! unknown expert and an existing output.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use mmerge_core::{Checkpoint, Dtype};
use mmerge_merge::MethodKind;
use mmerge_merge::experts::{self, ExpertOptions};
use mmerge_merge::params::ParamValue;

fn mmerge(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mmerge"))
        .args(args)
        .output()
        .unwrap()
}

/// A multiway checkpoint (two layers, the second a VL layer) and its seed model W0.
fn write_models(d: &Path) {
    let t = |name: &str, n: usize, x: f32| -> (String, Vec<usize>, Vec<f32>) {
        let v = (0..n).map(|i| ((i as f32) * 0.37 + x).sin()).collect();
        (name.to_string(), vec![n], v)
    };
    let multiway = vec![
        t("embeddings.word.weight", 12, 0.0),
        t("encoder.layers.0.attn.vision.q.weight", 16, 1.0),
        t("encoder.layers.0.attn.text.q.weight", 16, 2.0),
        t("encoder.layers.1.attn.vision.q.weight", 16, 3.0),
        t("encoder.layers.1.attn.text.q.weight", 16, 4.0),
        t("encoder.layers.1.attn.vl.q.weight", 16, 5.0),
    ];
    let w0 = vec![
        t("embeddings.word.weight", 12, 0.5),
        t("encoder.layers.0.attn.shared.q.weight", 16, 1.5),
        t("encoder.layers.1.attn.shared.q.weight", 16, 3.5),
    ];
    let cfg: &[(&str, &[u8])] = &[("config.json", b"{\"hidden_size\": 4}")];
    mmerge_core::writer::write_model(&d.join("multiway"), Dtype::F32, &multiway, 1 << 20, cfg)
        .unwrap();
    mmerge_core::writer::write_model(&d.join("w0"), Dtype::F32, &w0, 1 << 20, &[]).unwrap();
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn merge_experts_writes_the_bytes_of_the_library_call() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_models(d);
    let (mw, w0, out) = (d.join("multiway"), d.join("w0"), d.join("cli"));
    let o = mmerge(&[
        "merge-experts".as_ref(),
        mw.as_os_str(),
        out.as_os_str(),
        "--method".as_ref(),
        "ties".as_ref(),
        "--base".as_ref(),
        w0.as_os_str(),
        "--weight".as_ref(),
        "vision=0.5".as_ref(),
        "--weight".as_ref(),
        "text=0.7".as_ref(),
        "--param".as_ref(),
        "density=0.5".as_ref(),
        "--seed".as_ref(),
        "3".as_ref(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let opts = ExpertOptions {
        weights: [("vision".to_string(), 0.5), ("text".to_string(), 0.7)].into(),
        params: [("density".to_string(), ParamValue::Number(0.5))].into(),
        only: vec![],
        base: Some(Checkpoint::open(&w0).unwrap()),
        seed: 3,
        ..Default::default()
    };
    let plan = experts::plan(Checkpoint::open(&mw).unwrap(), MethodKind::Ties, opts).unwrap();
    let mut run = mmerge_merge::MergeOptions::new(d.join("lib"));
    run.seed = 3;
    mmerge_merge::run(&plan, "", &run, &indicatif::ProgressBar::hidden()).unwrap();

    let (cli, lib) = (files(&out), files(&d.join("lib")));
    assert_eq!(
        cli.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(),
        ["config.json", "mmerge_config.yml", "model.safetensors"]
    );
    assert_eq!(cli, lib);
    // The merge really merged: the VL layer's key differs from every expert and from W0.
    let merged = Checkpoint::open(&out).unwrap();
    let key = "encoder.layers.1.attn.shared.q.weight";
    let got = merged.read_f32(key).unwrap();
    let src = Checkpoint::open(&mw).unwrap();
    for e in ["vision", "text", "vl"] {
        let k = format!("encoder.layers.1.attn.{e}.q.weight");
        assert_ne!(got, src.read_f32(&k).unwrap(), "{k}");
    }

    // An existing output is refused, with the flag that replaces it.
    let again = mmerge(&[
        "experts".as_ref(),
        mw.as_os_str(),
        out.as_os_str(),
        "--method".as_ref(),
        "linear".as_ref(),
    ]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success());
    assert!(err.contains("pass --force to replace it"), "{err}");
}

#[test]
fn bad_arguments_name_the_flag_or_expert() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_models(d);
    let (mw, out) = (d.join("multiway"), d.join("out"));
    let run = |extra: &[&str]| {
        let mut args: Vec<&std::ffi::OsStr> =
            vec!["merge-experts".as_ref(), mw.as_os_str(), out.as_os_str()];
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        let o = mmerge(&args);
        assert!(!o.status.success(), "{extra:?} succeeded");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let err = run(&["--method", "ties"]);
    assert!(err.contains("ties needs --base"), "{err}");
    let err = run(&["--method", "linear", "--weight", "audio=1"]);
    assert!(err.contains("unknown expert `audio`"), "{err}");
    let err = run(&["--method", "linear", "--weight", "vision"]);
    assert!(err.contains("`vision` is not NAME=VALUE"), "{err}");
    let err = run(&["--method", "tie"]);
    assert!(
        err.contains("invalid value 'tie'") && err.contains("ties"),
        "{err}"
    );
    assert!(!out.exists());
}
