//! Bad input gets an error that names what is wrong, and leaves no output behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use mmerge_core::Dtype;

fn two_models(d: &std::path::Path, shape_b: Vec<usize>, key_b: &str, value_b: f32) {
    write_model(
        &d.join("a"),
        Dtype::F32,
        &[("model.layers.0.w".into(), vec![2, 3], vec![1.0; 6])],
        1 << 20,
        &[],
    )
    .unwrap();
    let n = shape_b.iter().product();
    write_model(
        &d.join("b"),
        Dtype::F32,
        &[(key_b.into(), shape_b, vec![value_b; n])],
        1 << 20,
        &[],
    )
    .unwrap();
}

fn linear(d: &std::path::Path) -> String {
    format!(
        "merge_method: linear\nmodels:\n  - model: {}\n    parameters: {{weight: 1}}\n  - model: {}\n    parameters: {{weight: 1}}\n",
        p(d, "a").display(),
        p(d, "b").display()
    )
}

fn assert_no_output(d: &std::path::Path) {
    let left: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !left.iter().any(|n| n == "out" || n.contains("mmerge-tmp")),
        "left behind: {left:?}"
    );
}

#[test]
fn shape_mismatch_names_key_and_both_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    two_models(d, vec![3, 2], "model.layers.0.w", 1.0);
    let e = merge(d, &linear(d), 0).unwrap_err().to_string();
    assert!(
        e.contains("tensor `model.layers.0.w`: shape [2, 3] in") && e.contains("but [3, 2] in"),
        "{e}"
    );
    assert_no_output(d);
}

#[test]
fn missing_key_names_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    two_models(d, vec![2, 3], "model.layers.0.v", 1.0);
    let e = merge(d, &linear(d), 0).unwrap_err().to_string();
    assert!(
        e.contains("tensor `model.layers.0.w` is missing from") && e.contains("/b"),
        "{e}"
    );
}

#[test]
fn non_finite_result_names_the_tensor_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    two_models(d, vec![2, 3], "model.layers.0.w", f32::NAN);
    let e = merge(d, &linear(d), 0).unwrap_err().to_string();
    assert!(
        e.contains("merged tensor `model.layers.0.w` contains NaN (element 0)"),
        "{e}"
    );
    assert_no_output(d);
}

#[test]
fn config_errors_list_valid_choices() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    two_models(d, vec![2, 3], "model.layers.0.w", 1.0);
    let e = merge(
        d,
        &linear(d).replace("weight: 1}", "weight: 1, densty: 0.5}"),
        0,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains(
            ":4: unknown parameter `densty` for merge_method `linear`; valid: weight, normalize"
        ),
        "{e}"
    );
    let e = merge(d, &linear(d).replace("linear", "ties"), 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("merge_method `ties` needs `base_model`"), "{e}");
    let e = merge(d, &linear(d).replace("{weight: 1}", "{}"), 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "parameter `weight` for tensor `model.layers.0.w`: is required and not set for model"
        ),
        "{e}"
    );
    let corrupt = d.join("c");
    std::fs::create_dir(&corrupt).unwrap();
    std::fs::write(
        corrupt.join("model.safetensors"),
        b"\x10\x00\x00\x00\x00\x00\x00\x00{not json",
    )
    .unwrap();
    let e = merge(d, &linear(d).replace("/b\n", "/c\n"), 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("c/model.safetensors: not a valid safetensors file: truncated"),
        "{e}"
    );
    assert_no_output(d);
}
