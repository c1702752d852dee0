//! Same output as mergekit on checkpoints with several numbered layer stacks (Florence-2- and
//! Whisper-like stand-ins, `tests/fixtures/mergekit/standins/make_standins.py`): a depth
//! gradient runs over each stack separately, as mergekit infers it from the tensor names.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_matches, cases, config_json, fixtures, merge, merge_case, mmerge};

#[test]
fn every_standin_case_matches_mergekit() {
    let dir = fixtures("standins");
    let cases = cases(&dir);
    assert!(cases.len() >= 4, "stand-in cases missing: {cases:?}");
    let tmp = tempfile::tempdir().unwrap();
    let mut worst = (0f64, String::new());
    for case in &cases {
        let out = tmp.path().join(case);
        merge_case(&dir, case, &out, &[]);
        let expected = dir.join("expected").join(case);
        let w = assert_matches(case, &out, &expected);
        // The vocabulary size follows the output tokenizer, as mergekit writes it.
        assert_eq!(
            config_json(&out)["vocab_size"],
            config_json(&expected)["vocab_size"],
            "{case}: vocab_size"
        );
        if w.0 > worst.0 {
            worst = w;
        }
    }
    eprintln!("largest scaled difference: {:.3e} at {}", worst.0, worst.1);
}

/// A multi-document config (mergekit-multi): every merge, intermediate and final, matches; a
/// second run keeps the intermediates; without `--intermediate-dir` it is refused.
#[test]
fn multi_document_config_matches_mergekit_multi() {
    let dir = fixtures("standins");
    let tmp = tempfile::tempdir().unwrap();
    let (out, inter) = (tmp.path().join("final"), tmp.path().join("inter"));
    let run = |extra: &[&str]| {
        let mut args = vec![
            "merge",
            "multi/multi_chain.yml",
            out.to_str().unwrap(),
            "-I",
            inter.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        mmerge(&dir, &args)
    };
    let o = run(&[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    // Dependency order: ab, then ab_ties (reads ab), then the final merge (reads both).
    let at = |s: &str| stdout.find(s).unwrap_or_else(|| panic!("{s} in {stdout}"));
    assert!(at("ab: slerp") < at("ab_ties: ties") && at("ab_ties: ties") < at("(final): linear"));
    let expected = dir.join("expected/multi_chain");
    for name in ["ab", "ab_ties"] {
        assert_matches(
            name,
            &inter.join(name),
            &expected.join("intermediate").join(name),
        );
    }
    assert_matches("final", &out, &expected.join("final"));

    let again = run(&["--force"]);
    assert!(again.status.success());
    let o = mmerge(
        &dir,
        &[
            "merge",
            "multi/multi_chain.yml",
            tmp.path().join("final2").to_str().unwrap(),
            "-I",
            inter.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("ab: kept") && stdout.contains("ab_ties: kept"),
        "{stdout}"
    );

    let o = mmerge(
        &dir,
        &[
            "merge",
            "multi/multi_chain.yml",
            tmp.path().join("x").to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("pass --intermediate-dir"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Merges `yaml` (with `{models}` standing for the stand-ins' folder) from a config file
/// `name`, expects a refusal and no output, and returns the error text.
fn refusal(name: &str, yaml: &str) -> String {
    let dir = fixtures("standins");
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join(name);
    let models = dir.join("models").display().to_string();
    std::fs::write(&cfg, yaml.replace("{models}", &models)).unwrap();
    let out = tmp.path().join("out");
    let o = merge(&dir, &cfg, &out, &[]);
    assert!(!o.status.success(), "{name} was merged");
    assert!(!out.exists(), "{name}: nothing is written");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A module name the checkpoint does not have is refused with its line and the names it has.
#[test]
fn unknown_module_is_refused_with_the_modules_there_are() {
    let err = refusal(
        "m.yml",
        "merge_method: linear\nmodules:\n  vision_tower:\n    models:\n      - model: {models}/florence_a\n",
    );
    assert!(
        err.contains("m.yml:3: module `vision_tower` is not a module of")
            && err.contains("its modules: default, language_model.model.decoder.layers, language_model.model.encoder.layers, vision_tower.blocks, vision_tower.convs"),
        "{err}"
    );
}

/// `union` over different vocabularies (mergekit builds a merged tokenizer) is refused by name.
#[test]
fn union_of_different_vocabularies_is_refused() {
    let err = refusal(
        "u.yml",
        "merge_method: linear\nmodels:\n  - model: {models}/tok_a\n  - model: {models}/tok_b\ntokenizer:\n  source: union\n",
    );
    assert!(
        err.contains("u.yml:6: tokenizer source `union` over models with different vocabularies is not supported"),
        "{err}"
    );
}

/// `slices:` on a checkpoint with several numbered stacks is refused (as mergekit does), with
/// the stacks it found.
#[test]
fn slices_over_several_stacks_are_refused() {
    let err = refusal(
        "s.yml",
        "merge_method: passthrough\nslices:\n  - sources:\n      - model: {models}/whisper_a\n        layer_range: [0, 2]\n",
    );
    assert!(
        err.contains("s.yml:5: `slices` need a checkpoint with one numbered layer stack")
            && err.contains("has 2: model.decoder.layers, model.encoder.layers"),
        "{err}"
    );
}
