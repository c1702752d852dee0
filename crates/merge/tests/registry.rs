//! The registry is complete: every registered merge method has a module doc with its formula,
//! its paper and our deviations; an oracle that the streamed merge matches; and mergekit golden
//! fixtures (or a stated reason why mergekit's output cannot be reproduced). A method added to
//! the registry without one of these fails here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::*;
use mmerge_core::Dtype;
use mmerge_merge::exec::CHUNK;
use mmerge_merge::methods::{Goldens, Inputs, Kind, MethodKind, OracleCase, Scope, Value, Values};

/// The `//!` lines at the top of a module's source.
fn module_doc(source: &str) -> String {
    source
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .map(|l| l.trim_start_matches("//!").trim())
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn every_method_states_its_formula_paper_and_deviations() {
    for &k in MethodKind::ALL {
        let m = k.method();
        let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("src/methods")
            .join(format!("{}.rs", k.module()));
        let source = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {}: {e}", m.name, file.display()));
        let doc = module_doc(&source);
        assert!(
            doc.len() >= 200,
            "{}: the module must open with a //! doc",
            m.name
        );
        assert!(
            doc.contains(&m.reference.cite()),
            "{}: the module doc must cite `{}`",
            m.name,
            m.reference.cite()
        );
        assert!(
            doc.contains(&format!("`{}`", m.name)),
            "{}: the module doc must name the method as configs spell it",
            m.name
        );
        assert!(
            doc.contains('=') && doc.contains('θ'),
            "{}: the module doc must state the formula (θ = …)",
            m.name
        );
        assert!(
            doc.to_lowercase().contains("deviation"),
            "{}: the module doc must state our deviations from mergekit (or that there are none)",
            m.name
        );
    }
}

#[test]
fn every_method_declares_consistent_parameters() {
    for &k in MethodKind::ALL {
        let m = k.method();
        let names: Vec<&str> = m.params.iter().map(|p| p.name).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{}: repeated parameter", m.name);
        let first_shared = m
            .params
            .iter()
            .position(|p| p.scope == Scope::Shared)
            .unwrap_or(m.params.len());
        assert!(
            m.params[first_shared..]
                .iter()
                .all(|p| p.scope == Scope::Shared),
            "{}: per-model parameters come first",
            m.name
        );
        for p in m.params {
            if let Kind::Number {
                default: Some(d),
                range: Some((lo, hi)),
                ..
            } = p.kind
            {
                assert!((lo..=hi).contains(&d), "{}: {} default", m.name, p.name);
            }
            if p.scope == Scope::NonBase {
                // A method with an optional base (multislerp) merges several inputs; without
                // a base every input gets the parameter.
                assert!(
                    m.needs_base || m.inputs == Inputs::Many,
                    "{}: {} needs a base",
                    m.name,
                    p.name
                );
            }
        }
    }
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/mergekit")
}

/// `merge_method` of a golden case's config.
fn case_method(case: &str) -> String {
    let text = std::fs::read_to_string(fixtures().join("cases").join(format!("{case}.yml")))
        .unwrap_or_else(|e| panic!("golden case `{case}`: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix("merge_method:"))
        .map(|m| m.trim().to_string())
        .unwrap_or_else(|| panic!("golden case `{case}` has no merge_method"))
}

#[test]
fn every_method_has_mergekit_goldens() {
    let mut claimed = vec![];
    for &k in MethodKind::ALL {
        let m = k.method();
        match m.goldens {
            Goldens::Cases(cases) => {
                assert!(!cases.is_empty(), "{}: no golden case", m.name);
                for case in cases {
                    assert_eq!(case_method(case), m.name, "golden case `{case}`");
                    assert!(
                        fixtures().join("expected").join(case).is_dir(),
                        "golden case `{case}`: mergekit's output is missing"
                    );
                    claimed.push(case.to_string());
                }
            }
            Goldens::Unreproducible(why) => {
                assert!(why.len() > 20, "{}: say why there is no golden", m.name);
            }
        }
    }
    // The half-precision cases pin `numerics: mergekit` of a method it emulates.
    for case in mmerge_merge::numerics::GOLDENS {
        let method = MethodKind::from_name(&case_method(case)).unwrap();
        assert!(mmerge_merge::numerics::supports(method), "`{case}`");
        assert!(fixtures().join("expected").join(case).is_dir(), "`{case}`");
        claimed.push(case.to_string());
    }
    // Every case on disk belongs to a method that lists it.
    for entry in std::fs::read_dir(fixtures().join("cases")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "yml") {
            let case = path.file_stem().unwrap().to_string_lossy().into_owned();
            assert!(
                claimed.contains(&case),
                "golden case `{case}` is not listed by method `{}`",
                case_method(&case)
            );
        }
    }
}

/// The methods mergekit 0.1.5 registers (`mergekit/merge_methods/registry.py`).
const MERGEKIT_METHODS: [&str; 20] = [
    "linear",
    "slerp",
    "nuslerp",
    "multislerp",
    "passthrough",
    "task_arithmetic",
    "ties",
    "dare_ties",
    "dare_linear",
    "breadcrumbs",
    "breadcrumbs_ties",
    "della",
    "della_linear",
    "model_stock",
    "sce",
    "karcher",
    "nearswap",
    "arcee_fusion",
    "ram",
    "ramplus_tl",
];

#[test]
fn every_mergekit_method_is_registered() {
    for name in MERGEKIT_METHODS {
        assert!(
            MethodKind::from_name(name).is_some(),
            "mergekit's `{name}` is missing"
        );
    }
}

/// Shapes of the test tensors: one spans three chunks, one is tiny.
fn shapes() -> Vec<(String, Vec<usize>)> {
    vec![
        ("model.embed_tokens.weight".into(), vec![3, 5]),
        (
            "model.layers.0.mlp.up_proj.weight".into(),
            vec![2, CHUNK + 321],
        ),
        ("model.layers.1.self_attn.q_proj.weight".into(), vec![4, 4]),
    ]
}

/// A value for a declared number: inside its range, different per model.
fn number_for(kind: &Kind, model: usize) -> f64 {
    let u = 0.35 + 0.2 * model as f64;
    match kind {
        Kind::Number {
            range: Some((lo, hi)),
            ..
        } => lo + (hi - lo) * u.min(0.9),
        _ => u * if model == 1 { -1.0 } else { 1.0 } + 0.1,
    }
}

fn yaml_value(v: Value) -> String {
    match v {
        Value::Number(x) => format!("{x}"),
        Value::Flag(b) => format!("{b}"),
    }
}

/// Merges random models with every declared parameter set explicitly, through the real
/// executor, and compares each tensor with the method's oracle.
fn check_against_oracle(k: MethodKind, flags: bool, seed: u64) {
    let m = k.method();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let n_inputs = match m.inputs {
        Inputs::Many => 3,
        Inputs::One => 1,
        Inputs::Two => 2,
    };
    let mut g = Gen::new(seed);
    let write = |g: &mut Gen, name: &str, base: Option<&Tensors>| -> Tensors {
        let t: Tensors = shapes()
            .into_iter()
            .enumerate()
            .map(|(i, (n, s))| {
                let numel = s.iter().product();
                let mut v = g.vec(numel, 0.3);
                if let Some(b) = base {
                    v.iter_mut().zip(&b[i].2).for_each(|(x, b)| *x += b);
                }
                (n, s, v)
            })
            .collect();
        write_model(&d.join(name), Dtype::F32, &t, 50_000, &[]).unwrap();
        t
    };
    let base = m.needs_base.then(|| write(&mut g, "base", None));
    let inputs: Vec<Tensors> = (0..n_inputs)
        .map(|i| write(&mut g, &format!("in{i}"), base.as_ref()))
        .collect();
    // Data-dependent methods: a statistics folder per model, base included.
    let mut names: Vec<String> = (0..n_inputs).map(|i| format!("in{i}")).collect();
    if base.is_some() {
        names.push("base".into());
    }
    let stats: Vec<Vec<Vec<f32>>> = match m.statistics.folder() {
        None => vec![],
        Some(folder) => names
            .iter()
            .map(|name| {
                write_statistics(
                    &mut g,
                    &d.join(format!("stats-{name}")).join(folder),
                    folder,
                )
            })
            .collect(),
    };

    let mut values = Values::default();
    let mut yaml = format!("merge_method: {}\n", m.name);
    if base.is_some() {
        yaml += &format!("base_model: {}\n", p(d, "base").display());
    }
    yaml += "models:\n";
    for i in 0..n_inputs {
        let mut own = BTreeMap::new();
        for spec in m.params.iter().filter(|s| s.scope != Scope::Shared) {
            own.insert(spec.name, Value::Number(number_for(&spec.kind, i)));
        }
        // DELLA refuses an epsilon that takes density ± epsilon outside (0, 1).
        if let (Some(Value::Number(d)), Some(Value::Number(e))) =
            (own.get("density").copied(), own.get("epsilon").copied())
        {
            own.insert("epsilon", Value::Number(e.min(0.9 * d.min(1.0 - d))));
        }
        let params: Vec<String> = own
            .iter()
            .map(|(n, v)| format!("{n}: {}", yaml_value(*v)))
            .collect();
        yaml += &format!(
            "  - model: {}\n    parameters: {{{}}}\n",
            p(d, &format!("in{i}")).display(),
            params.join(", ")
        );
        values.models.push(own);
    }
    yaml += "parameters:\n";
    for spec in m.params.iter().filter(|s| s.scope == Scope::Shared) {
        let v = match spec.kind {
            Kind::Flag { .. } => Value::Flag(flags),
            _ => Value::Number(number_for(&spec.kind, 0)),
        };
        yaml += &format!("  {}: {}\n", spec.name, yaml_value(v));
        values.shared.insert(spec.name, v);
    }
    yaml += "dtype: float32\n";
    if !stats.is_empty() {
        yaml += "statistics:\n";
        for name in &names {
            yaml += &format!(
                "  {}: {}\n",
                p(d, name).display(),
                d.join(format!("stats-{name}")).display()
            );
        }
    }

    let out = merge(d, &yaml, seed).unwrap_or_else(|e| panic!("{}: {e}\n{yaml}", m.name));
    for (t, (name, shape)) in shapes().iter().enumerate() {
        let xs: Vec<Vec<f32>> = inputs.iter().map(|m| m[t].2.clone()).collect();
        let statistics: Vec<Vec<f32>> = stats.iter().map(|s| s[t].clone()).collect();
        let want = (m.oracle)(&OracleCase {
            statistics: &statistics,
            tensor: name,
            shape,
            seed,
            base: base.as_ref().map(|b| b[t].2.as_slice()),
            inputs: &xs,
            values: &values,
        });
        assert_close(
            &format!("{} (flags {flags}) {name}", m.name),
            &out.read_f32(name).unwrap(),
            &want,
            1e-6,
            1e-3,
        );
    }
}

/// Writes a statistics checkpoint for the test shapes and returns its tensors (empty where it
/// has none): a Fisher (squares, ≥ 0) of every tensor, or the Gram XᵀX/n of a random X for the
/// small linear weight only (the others are then averaged).
fn write_statistics(g: &mut Gen, dir: &std::path::Path, folder: &str) -> Vec<Vec<f32>> {
    let mut written: Tensors = vec![];
    let mut values = vec![];
    for (name, shape) in shapes() {
        let numel: usize = shape.iter().product();
        let v = match folder {
            "fisher" => g.vec(numel, 1.0).iter().map(|x| x * x).collect(),
            _ if shape.len() == 2 && shape[1] <= 8 => {
                let (rows, d) = (3 * shape[1], shape[1]);
                let x = g.vec(rows * d, 1.0);
                let mut gram = vec![0f32; d * d];
                for r in 0..rows {
                    for i in 0..d {
                        for j in 0..d {
                            gram[i * d + j] += x[r * d + i] * x[r * d + j] / rows as f32;
                        }
                    }
                }
                gram
            }
            _ => vec![],
        };
        if !v.is_empty() {
            let s = if folder == "fisher" {
                shape.clone()
            } else {
                vec![shape[1], shape[1]]
            };
            written.push((name.clone(), s, v.clone()));
        }
        values.push(v);
    }
    write_model(dir, Dtype::F32, &written, 50_000, &[]).unwrap();
    values
}

#[test]
fn every_method_matches_its_oracle_through_the_executor() {
    for &k in MethodKind::ALL {
        for (flags, seed) in [(true, 3), (false, 8)] {
            check_against_oracle(k, flags, seed);
        }
    }
}
