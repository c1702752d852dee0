//! The real pair: `mmerge encode` and `mmerge doctor`, typed at the `mmerge` binary, run in
//! this crate's `mmerge-torch` (crates/cli/tests/handoff.rs checks the hand-off itself).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

/// `mmerge`, which cargo builds into the same folder when both packages are built (`cargo
/// test --workspace`, or `-p mmerge-cli -p mmerge-torch`).
fn mmerge() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_mmerge-torch")).with_file_name("mmerge");
    assert!(
        exe.is_file(),
        "{} is missing: build mmerge-cli in the same profile too (cargo test -p mmerge-cli -p \
         mmerge-torch, or --workspace)",
        exe.display()
    );
    exe
}

#[test]
fn mmerge_doctor_runs_in_mmerge_torch() {
    let o = Command::new(mmerge()).arg("doctor").output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("libtorch version"), "{out}");
    assert!(out.contains("matmul on Cpu: ok"), "{out}");
}

#[test]
fn mmerge_encode_help_and_errors_come_from_mmerge_torch() {
    let o = Command::new(mmerge())
        .args(["encode", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{help}");
    assert!(
        help.contains("Usage: mmerge encode [OPTIONS] --model <MODEL> --out <OUT>"),
        "{help}"
    );
    assert!(help.contains("--image-size <IMAGE_SIZE>"), "{help}");
    // An error of the encode command itself, with its exit status.
    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new(mmerge())
        .args(["encode", "--model", "no-org/no-such-model", "--out"])
        .arg(tmp.path().join("x.safetensors"))
        .env("HF_HUB_CACHE", tmp.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("`no-org/no-such-model` is neither a path nor a model in the local hub cache"),
        "{err}"
    );
}
