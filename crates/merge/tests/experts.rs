//! The expert-into-shared merge (`experts::plan`): for every registered method, a small
//! multiway checkpoint merges into exactly the shared model's keys and shapes, and every
//! merged tensor equals that method's float64 oracle applied to the expert tensors; copied keys
//! keep their bytes. Bad options are typed errors naming what is wrong.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use indicatif::ProgressBar;
use mmerge_core::{Checkpoint, Dtype};
use mmerge_merge::experts::{self, ExpertOptions, ExpertsError};
use mmerge_merge::methods::{Inputs, Kind, MethodKind, OracleCase, Scope, Value, Values};
use mmerge_merge::params::{ParamMap, ParamValue};

/// (shared-model key, shape, experts): no experts means a key copied unchanged.
fn layout() -> Vec<(&'static str, Vec<usize>, &'static [&'static str])> {
    vec![
        ("embeddings.word.weight", vec![6, 4], &[]),
        (
            "encoder.layers.0.attn.shared.q.weight",
            vec![4, 4],
            &["vision", "text"],
        ),
        ("encoder.layers.0.ffn.shared.fc1.weight", vec![8, 4], &[]),
        ("encoder.layers.0.ffn.shared.fc1.bias", vec![8], &[]),
        (
            "encoder.layers.1.attn.shared.q.weight",
            vec![4, 4],
            &["vision", "text", "vl"],
        ),
        (
            "encoder.layers.1.ffn.shared.fc1.bias",
            vec![8],
            &["vision", "text", "vl"],
        ),
        ("norm.weight", vec![4], &[]),
    ]
}

fn expert_key(out: &str, expert: &str) -> String {
    out.replacen(".shared.", &format!(".{expert}."), 1)
}

struct Fixture {
    dir: tempfile::TempDir,
    /// W0: the shared model's keys.
    base: BTreeMap<String, Vec<f32>>,
    /// The multiway checkpoint's tensors: W0 plus a different offset per expert.
    multiway: BTreeMap<String, Vec<f32>>,
    /// Statistics of the data-dependent methods, under the keys of the multiway checkpoint and
    /// of W0: a Fisher of every tensor, a Gram of every [4, 4] attention weight.
    fisher: BTreeMap<String, Vec<f32>>,
    gram: BTreeMap<String, Vec<f32>>,
}

/// Writes the statistics of `tensors` to `dir/{fisher,gram}`.
fn write_statistics(
    g: &mut Gen,
    dir: &Path,
    tensors: &Tensors,
    fisher: &mut BTreeMap<String, Vec<f32>>,
    gram: &mut BTreeMap<String, Vec<f32>>,
) {
    let (mut f_t, mut g_t): (Tensors, Tensors) = (vec![], vec![]);
    for (key, shape, v) in tensors {
        let f: Vec<f32> = g.vec(v.len(), 1.0).iter().map(|x| x * x).collect();
        f_t.push((key.clone(), shape.clone(), f.clone()));
        fisher.insert(key.clone(), f);
        if key.contains(".attn.") {
            // XᵀX / n of 12 random rows: symmetric positive definite.
            let x = g.vec(12 * 4, 1.0);
            let gr: Vec<f32> = (0..16)
                .map(|ij| {
                    (0..12)
                        .map(|r| x[r * 4 + ij / 4] * x[r * 4 + ij % 4])
                        .sum::<f32>()
                        / 12.0
                })
                .collect();
            g_t.push((key.clone(), vec![4, 4], gr.clone()));
            gram.insert(key.clone(), gr);
        }
    }
    write_model(&dir.join("fisher"), Dtype::F32, &f_t, 1 << 20, &[]).unwrap();
    write_model(&dir.join("gram"), Dtype::F32, &g_t, 1 << 20, &[]).unwrap();
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut g = Gen::new(5);
    let (mut base_t, mut multi_t): (Tensors, Tensors) = (vec![], vec![]);
    for (key, shape, experts) in layout() {
        let n: usize = shape.iter().product();
        let w0 = g.vec(n, 0.5);
        base_t.push((key.to_string(), shape.clone(), w0.clone()));
        if experts.is_empty() {
            multi_t.push((key.to_string(), shape.clone(), w0));
            continue;
        }
        for e in experts {
            let d = g.vec(n, 0.2);
            let v = w0.iter().zip(&d).map(|(a, b)| a + b).collect();
            multi_t.push((expert_key(key, e), shape.clone(), v));
        }
    }
    write_model(&dir.path().join("w0"), Dtype::F32, &base_t, 1 << 20, &[]).unwrap();
    write_model(
        &dir.path().join("multiway"),
        Dtype::F32,
        &multi_t,
        1 << 20,
        &[("config.json", b"{\"sharing\": \"all-specific\"}")],
    )
    .unwrap();
    let (mut fisher, mut gram) = (BTreeMap::new(), BTreeMap::new());
    for (name, t) in [("w0", &base_t), ("multiway", &multi_t)] {
        let stats = dir.path().join(format!("stats-{name}"));
        write_statistics(&mut g, &stats, t, &mut fisher, &mut gram);
    }
    let map = |t: Tensors| t.into_iter().map(|(k, _, v)| (k, v)).collect();
    Fixture {
        dir,
        base: map(base_t),
        multiway: map(multi_t),
        fisher,
        gram,
    }
}

const WEIGHTS: [(&str, f64); 3] = [("vision", 0.7), ("text", 0.4), ("vl", 0.9)];

/// A value for each parameter that has no default; the others keep their defaults.
fn params_for(k: MethodKind) -> ParamMap {
    let mut p = ParamMap::new();
    for spec in k.params() {
        let v = match spec.name {
            "t" => 0.3,
            "density" => 0.6,
            "lambda" => 0.8,
            _ => continue,
        };
        p.insert(spec.name.to_string(), ParamValue::Number(v));
    }
    p
}

fn options(k: MethodKind, dir: &Path) -> ExpertOptions {
    ExpertOptions {
        weights: WEIGHTS.iter().map(|(e, w)| (e.to_string(), *w)).collect(),
        params: params_for(k),
        only: match k.method().inputs {
            Inputs::One => vec!["vision".into()],
            Inputs::Two => vec!["vision".into(), "text".into()],
            Inputs::Many => vec![],
        },
        base: k
            .needs_base()
            .then(|| Checkpoint::open(dir.join("w0")).unwrap()),
        seed: 11,
        statistics: k.statistics().folder().map(|_| dir.join("stats-multiway")),
        base_statistics: (k.statistics().folder().is_some() && k.needs_base())
            .then(|| dir.join("stats-w0")),
    }
}

/// The evaluated parameters the planner must hand the method, built from the declarations.
fn values(k: MethodKind, experts: &[&str]) -> Values {
    let given = params_for(k);
    let value = |name: &str, kind: &Kind| -> Option<Value> {
        match (given.get(name), kind) {
            (Some(ParamValue::Number(x)), _) => Some(Value::Number(*x)),
            (_, Kind::Flag { default }) => Some(Value::Flag(*default)),
            (_, Kind::Number { default, .. }) => default.map(Value::Number),
        }
    };
    let mut v = Values::default();
    for spec in k.params().iter().filter(|s| s.scope == Scope::Shared) {
        if let Some(x) = value(spec.name, &spec.kind) {
            v.shared.insert(spec.name, x);
        }
    }
    for e in experts {
        let mut own = BTreeMap::new();
        for spec in k.params().iter().filter(|s| s.scope != Scope::Shared) {
            let x = if spec.name == "weight" {
                WEIGHTS
                    .iter()
                    .find(|w| w.0 == *e)
                    .map(|w| Value::Number(w.1))
            } else {
                value(spec.name, &spec.kind)
            };
            if let Some(x) = x {
                own.insert(spec.name, x);
            }
        }
        v.models.push(own);
    }
    v
}

fn merge(plan: &mmerge_merge::MergePlan, out: &Path) -> Checkpoint {
    let mut opts = mmerge_merge::MergeOptions::new(out);
    opts.copy_tokenizer = false;
    mmerge_merge::run(plan, "", &opts, &ProgressBar::hidden()).unwrap();
    Checkpoint::open(out).unwrap()
}

#[test]
fn every_method_merges_the_experts_as_its_oracle_does() {
    let f = fixture();
    let d = f.dir.path();
    for &k in MethodKind::ALL {
        let opts = options(k, d);
        let only = opts.only.clone();
        let seed = opts.seed;
        let multiway = Checkpoint::open(d.join("multiway")).unwrap();
        let plan = experts::plan(multiway, k, opts).unwrap_or_else(|e| panic!("{}: {e}", k.name()));
        let out = merge(&plan, &d.join(format!("out-{}", k.name())));
        // Exactly the shared model's keys and shapes.
        let mut got: Vec<(String, Vec<usize>)> = out
            .names()
            .iter()
            .map(|n| (n.clone(), out.meta(n).unwrap().shape.clone()))
            .collect();
        got.sort();
        let mut want: Vec<(String, Vec<usize>)> = layout()
            .into_iter()
            .map(|(k, s, _)| (k.to_string(), s))
            .collect();
        want.sort();
        assert_eq!(got, want, "{}", k.name());
        assert_eq!(
            std::fs::read(out.dir().join("config.json")).unwrap(),
            b"{\n  \"sharing\": \"shared\"\n}",
            "{}: config.json from the multiway checkpoint, now the shared model's",
            k.name()
        );
        for (key, shape, all) in layout() {
            let merged = out.read_f32(key).unwrap();
            let experts: Vec<&str> = all
                .iter()
                .copied()
                .filter(|e| only.is_empty() || only.iter().any(|o| o == e))
                .collect();
            if all.is_empty() || (experts.len() == 1 && !k.needs_base()) {
                let src = match experts.first() {
                    Some(e) => expert_key(key, e),
                    None => key.to_string(),
                };
                assert_eq!(merged, f.multiway[&src], "{}: {key} copied", k.name());
                continue;
            }
            let xs: Vec<Vec<f32>> = experts
                .iter()
                .map(|e| f.multiway[&expert_key(key, e)].clone())
                .collect();
            let stats = match k.statistics().folder() {
                Some("fisher") => &f.fisher,
                Some(_) => &f.gram,
                None => &BTreeMap::new(),
            };
            let mut statistics: Vec<Vec<f32>> = experts
                .iter()
                .map(|e| stats.get(&expert_key(key, e)).cloned().unwrap_or_default())
                .collect();
            if k.needs_base() {
                statistics.extend(stats.get(key).cloned());
            }
            let want = (k.method().oracle)(&OracleCase {
                statistics: &statistics,
                tensor: key,
                shape: &shape,
                seed,
                base: k.needs_base().then(|| f.base[key].as_slice()),
                inputs: &xs,
                values: &values(k, &experts),
            });
            assert_close(&format!("{} {key}", k.name()), &merged, &want, 1e-6, 1e-3);
            // The merge did something: it is not a copy of any one expert.
            if experts.len() > 1 {
                assert!(xs.iter().all(|x| *x != merged), "{} {key}", k.name());
            }
        }
    }
}

#[test]
fn vision_weight_one_and_text_weight_zero_give_the_vision_experts() {
    let f = fixture();
    let d = f.dir.path();
    let opts = ExpertOptions {
        weights: [("vision", 1.0), ("text", 0.0), ("vl", 0.0)]
            .iter()
            .map(|(e, w)| (e.to_string(), *w))
            .collect(),
        ..Default::default()
    };
    let ck = Checkpoint::open(d.join("multiway")).unwrap();
    let plan = experts::plan(ck, MethodKind::Linear, opts).unwrap();
    let out = merge(&plan, &d.join("out"));
    for (key, _, all) in layout() {
        let src = if all.is_empty() {
            key.to_string()
        } else {
            expert_key(key, "vision")
        };
        assert_eq!(out.read_f32(key).unwrap(), f.multiway[&src], "{key}");
    }
}

fn plan_err(k: MethodKind, opts: ExpertOptions, d: &Path) -> String {
    let ck = Checkpoint::open(d.join("multiway")).unwrap();
    let e = experts::plan(ck, k, opts).unwrap_err();
    let text = e.to_string();
    match (&e, k) {
        (ExpertsError::Merge(_), _) => panic!("untyped: {text}"),
        _ => text,
    }
}

#[test]
fn bad_options_are_typed_errors_naming_the_fault() {
    let f = fixture();
    let d = f.dir.path();
    let ties = |base: Option<&str>| ExpertOptions {
        base: base.map(|b| Checkpoint::open(d.join(b)).unwrap()),
        ..Default::default()
    };
    // A method needing a base without one.
    let e = plan_err(MethodKind::Ties, ties(None), d);
    assert!(e.contains("ties needs a base"), "{e}");
    // A base given to a method that takes none.
    let e = plan_err(MethodKind::Linear, ties(Some("w0")), d);
    assert!(e.contains("linear takes no base"), "{e}");
    // Unknown expert names, in weights and in `only`.
    let mut o = ExpertOptions::default();
    o.weights.insert("audio".into(), 1.0);
    let e = plan_err(MethodKind::Linear, o, d);
    assert!(e.contains("unknown expert `audio`"), "{e}");
    let o = ExpertOptions {
        only: vec!["visoin".into()],
        ..Default::default()
    };
    assert!(plan_err(MethodKind::Linear, o, d).contains("`visoin`"));
    // An expert chosen that a key does not have.
    let o = ExpertOptions {
        only: vec!["vl".into()],
        ..Default::default()
    };
    let e = plan_err(MethodKind::Linear, o, d);
    assert!(
        e.contains("`encoder.layers.0.attn.shared.q.weight` has none of the experts [\"vl\"]"),
        "{e}"
    );
    // One-input methods need one expert.
    let e = plan_err(MethodKind::Slerp, ties(Some("w0")), d);
    assert!(e.contains("slerp merges one expert per tensor"), "{e}");
    // A parameter the method does not declare.
    let o = ExpertOptions {
        params: ParamMap::from([("t".to_string(), ParamValue::Number(0.5))]),
        ..Default::default()
    };
    let e = plan_err(MethodKind::Linear, o, d);
    assert!(
        e.contains("unknown parameter `t` for linear; valid: weight"),
        "{e}"
    );

    // A base missing a key, and one with a wrong shape.
    let mut w0: Tensors = layout()
        .into_iter()
        .filter(|(k, _, _)| *k != "encoder.layers.1.ffn.shared.fc1.bias")
        .map(|(k, s, _)| {
            let n = s.iter().product();
            (k.to_string(), s, vec![0.0; n])
        })
        .collect();
    write_model(&d.join("w0-missing"), Dtype::F32, &w0, 1 << 20, &[]).unwrap();
    let e = plan_err(MethodKind::Ties, ties(Some("w0-missing")), d);
    assert!(
        e.contains("has no tensor `encoder.layers.1.ffn.shared.fc1.bias`"),
        "{e}"
    );
    w0.push((
        "encoder.layers.1.ffn.shared.fc1.bias".into(),
        vec![4],
        vec![0.0; 4],
    ));
    write_model(&d.join("w0-shape"), Dtype::F32, &w0, 1 << 20, &[]).unwrap();
    let e = plan_err(MethodKind::Ties, ties(Some("w0-shape")), d);
    assert!(
        e.contains(
            "`encoder.layers.1.ffn.shared.fc1.bias` has shape [4], the shared model's is [8]"
        ),
        "{e}"
    );
}
