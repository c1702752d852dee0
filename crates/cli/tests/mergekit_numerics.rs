//! Half-precision configs against mergekit: the `*_float16` and `*_bfloat16` cases under
//! `tests/fixtures/mergekit` (mergekit 0.1.5 computing in that dtype) merged by `mmerge` twice.
//!
//! - With `--numerics mergekit` the output must be mergekit's bit for bit; for TIES, every
//!   element that differs must lie where an input's magnitudes tie exactly at its top-k
//!   threshold and only some of the tied entries are kept (torch's argsort picks which).
//! - With the default float64 numerics the difference is measured and printed (the README's
//!   mergekit section quotes it): elements that differ, the largest |Δ| in steps of the dtype
//!   at the larger of the two values, and the largest |Δ|. Run
//!   `cargo test -p mmerge-cli --test mergekit_numerics -- --nocapture` to see the table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use mmerge_core::Checkpoint;
use mmerge_merge::numerics::Half;

mod common;

use common::{merge, merge_case};

fn fixtures() -> PathBuf {
    common::fixtures("")
}

/// (case, dtype, float64-mode bounds: most differing elements, largest |Δ| in steps at the
/// larger value, largest |Δ|).
const CASES: [(&str, Half, usize, f64, f64); 8] = [
    ("linear_float16", Half::F16, 700, 20.0, 1e-3),
    ("linear_bfloat16", Half::BF16, 700, 20.0, 8e-3),
    ("task_arithmetic_float16", Half::F16, 1000, 120.0, 1e-3),
    ("task_arithmetic_bfloat16", Half::BF16, 1000, 250.0, 8e-3),
    ("slerp_float16", Half::F16, 450, 25.0, 1e-3),
    ("slerp_bfloat16", Half::BF16, 450, 25.0, 8e-3),
    ("ties_float16", Half::F16, 700, 700.0, 0.5),
    ("ties_bfloat16", Half::BF16, 700, 700.0, 0.5),
];

/// Per tensor name: (ours, mergekit's) values, in file order of mergekit's output.
fn pairs(ours: &Path, case: &str) -> Vec<(String, Vec<f32>, Vec<f32>)> {
    let ours = Checkpoint::open(ours).unwrap();
    let theirs = Checkpoint::open(fixtures().join("expected").join(case)).unwrap();
    assert_eq!(ours.names().len(), theirs.names().len(), "{case}");
    theirs
        .names()
        .iter()
        .map(|n| {
            assert_eq!(
                ours.meta(n).unwrap().dtype,
                theirs.meta(n).unwrap().dtype,
                "{case} {n}"
            );
            (
                n.clone(),
                ours.read_f32(n).unwrap(),
                theirs.read_f32(n).unwrap(),
            )
        })
        .collect()
}

/// Positions of a TIES tensor where some input's r-magnitude |r(r(x) − r(b))| ties at its
/// top-k threshold with more tied entries than are kept: there, mergekit's choice depends on
/// torch's argsort order.
fn contested(half: Half, key: &str) -> Vec<bool> {
    let m = fixtures().join("models");
    let open = |name: &str| {
        Checkpoint::open(m.join(name))
            .unwrap()
            .read_f32(key)
            .unwrap()
    };
    let base: Vec<f32> = open("base").iter().map(|v| half.round(*v)).collect();
    let mut out = vec![false; base.len()];
    // The `ties` case's densities.
    for (model, density) in [("a", 0.5), ("b", 0.7), ("c", 0.3)] {
        let mag: Vec<f32> = open(model)
            .iter()
            .zip(&base)
            .map(|(x, b)| half.round(half.round(*x) - b).abs())
            .collect();
        let k = ((density * mag.len() as f64) as usize).max(1);
        let mut sorted = mag.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let th = sorted[k - 1];
        let greater = mag.iter().filter(|v| **v > th).count();
        let equal = mag.iter().filter(|v| **v == th).count();
        if equal > k - greater {
            for (o, v) in out.iter_mut().zip(&mag) {
                *o |= *v == th;
            }
        }
    }
    out
}

#[test]
fn mergekit_numerics_match_mergekit_bit_for_bit() {
    let names: Vec<&str> = CASES.iter().map(|c| c.0).collect();
    assert_eq!(
        names,
        mmerge_merge::numerics::GOLDENS,
        "every half golden is compared"
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut table = vec![];
    for (case, half, max_count, max_steps, max_abs) in CASES {
        let ties = case.starts_with("ties");
        // The switch: bit for bit (TIES: but for threshold ties).
        let out = tmp.path().join(format!("{case}-mergekit"));
        merge_case(&fixtures(), case, &out, &["--numerics", "mergekit"]);
        let (mut differ, mut ties_at, mut total) = (0usize, 0usize, 0usize);
        for (name, got, want) in pairs(&out, case) {
            let open = if ties { contested(half, &name) } else { vec![] };
            ties_at += open.iter().filter(|c| **c).count();
            for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                total += 1;
                if g.to_bits() != w.to_bits() {
                    differ += 1;
                    assert!(
                        ties && open[j],
                        "{case} {name}[{j}]: mmerge {g}, mergekit {w} (not a threshold tie)"
                    );
                }
            }
        }
        // The counts of the fixtures as they are (torch's argsort decided these).
        let expect = match case {
            "ties_float16" => 9,
            "ties_bfloat16" => 27,
            _ => 0,
        };
        assert_eq!(
            differ, expect,
            "{case}: elements that differ with the switch"
        );

        // Float64 numerics: measured.
        let out = tmp.path().join(format!("{case}-float64"));
        merge_case(&fixtures(), case, &out, &[]);
        let (mut d64, mut steps, mut abs) = (0usize, 0f64, 0f64);
        for (_, got, want) in pairs(&out, case) {
            for (g, w) in got.iter().zip(&want) {
                if g.to_bits() != w.to_bits() {
                    d64 += 1;
                    let delta = f64::from((g - w).abs());
                    let step = f64::from(half.step(g.abs().max(w.abs())));
                    steps = steps.max(delta / step);
                    abs = abs.max(delta);
                }
            }
        }
        assert!(
            d64 > 0 && d64 <= max_count && steps <= max_steps && abs <= max_abs,
            "{case}: float64 numerics differ in {d64} elements, by up to {steps} steps, {abs}"
        );
        table.push(format!(
            "| {case} | {d64} / {total} | {steps:.0} | {abs:.2e} | {differ} (threshold ties: {ties_at} contested positions) |"
        ));
    }
    eprintln!(
        "| case | float64: differing / total | max |Δ| (steps) | max |Δ| | mergekit numerics: differing |"
    );
    for row in table {
        eprintln!("{row}");
    }
}

#[test]
fn the_config_key_does_what_the_flag_does_and_bad_uses_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(fixtures().join("cases/slerp_bfloat16.yml")).unwrap();
    let cfg = tmp.path().join("keyed.yml");
    std::fs::write(&cfg, format!("{text}numerics: mergekit\n")).unwrap();
    let run = |cfg: &Path, out: &Path, args: &[&str]| merge(&fixtures(), cfg, out, args);
    let keyed = tmp.path().join("keyed");
    assert!(run(&cfg, &keyed, &[]).status.success());
    let flagged = tmp.path().join("flagged");
    let case = fixtures().join("cases/slerp_bfloat16.yml");
    assert!(
        run(&case, &flagged, &["--numerics", "mergekit"])
            .status
            .success()
    );
    let bytes = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert_eq!(bytes(&keyed), bytes(&flagged));
    // `--numerics float64` overrides the key.
    let plain = tmp.path().join("plain");
    assert!(
        run(&cfg, &plain, &["--numerics", "float64"])
            .status
            .success()
    );
    assert_ne!(bytes(&plain), bytes(&keyed));

    // A float32 config cannot compute in a half dtype; the flag has no line to name.
    let f32_case = fixtures().join("cases/slerp.yml");
    let o = run(
        &f32_case,
        &tmp.path().join("x"),
        &["--numerics", "mergekit"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("slerp.yml: numerics `mergekit` reproduces mergekit's half-precision")
            && err.contains("not `dtype: float32`"),
        "{err}"
    );
    let o = run(&cfg, &tmp.path().join("y"), &["--numerics", "fast"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("unknown numerics `fast`; valid: float64, mergekit")
    );
}
