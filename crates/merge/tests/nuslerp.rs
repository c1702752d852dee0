//! NuSLERP through the executor, against its oracle, in the cases the registry test does not
//! reach: with a base (task vectors), per column (`nuslerp_row_wise`) including a tensor whose
//! statistics take several windows of chunks, rows that straddle chunks, and the exactly-two
//! check.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use mmerge_core::Dtype;
use mmerge_merge::exec::CHUNK;
use mmerge_merge::methods::{MethodKind, OracleCase, Value, Values};

fn shapes() -> Vec<(String, Vec<usize>)> {
    vec![
        // Columns spanning 48 chunks: the column sums need more than one window (columns of
        // six elements, so that no two are nearly parallel: that would be ill-conditioned).
        (
            "model.layers.0.mlp.up_proj.weight".into(),
            vec![6, 8 * CHUNK + 1],
        ),
        // Rows that straddle chunk boundaries.
        (
            "model.layers.0.mlp.down_proj.weight".into(),
            vec![5, CHUNK / 2 + 3],
        ),
        (
            "model.layers.1.self_attn.q_proj.weight".into(),
            vec![4, 3, 2],
        ),
        ("model.norm.weight".into(), vec![6]),
    ]
}

fn check(with_base: bool, flatten: bool, row_wise: bool, weights: [f64; 2]) {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut g = Gen::new(17 + u64::from(flatten) + 2 * u64::from(row_wise));
    let mut write = |name: &str, base: Option<&Tensors>| -> Tensors {
        let t: Tensors = shapes()
            .into_iter()
            .enumerate()
            .map(|(i, (n, s))| {
                let mut v = g.vec(s.iter().product(), 0.3);
                if let Some(b) = base {
                    v.iter_mut().zip(&b[i].2).for_each(|(x, b)| *x += b);
                }
                (n, s, v)
            })
            .collect();
        write_model(&d.join(name), Dtype::F32, &t, 4 << 20, &[]).unwrap();
        t
    };
    let base = with_base.then(|| write("base", None));
    let x1 = write("x1", base.as_ref());
    let x2 = write("x2", base.as_ref());
    let mut yaml = "merge_method: nuslerp\n".to_string();
    if with_base {
        yaml += &format!("base_model: {}\n", p(d, "base").display());
    }
    yaml += &format!(
        "models:\n  - model: {}\n    parameters: {{weight: {}}}\n  - model: {}\n    parameters: \
         {{weight: {}}}\nparameters:\n  nuslerp_flatten: {flatten}\n  nuslerp_row_wise: \
         {row_wise}\ndtype: float32\n",
        p(d, "x1").display(),
        weights[0],
        p(d, "x2").display(),
        weights[1],
    );
    let out = merge(d, &yaml, 0).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let values = Values {
        shared: BTreeMap::from([
            ("nuslerp_flatten", Value::Flag(flatten)),
            ("nuslerp_row_wise", Value::Flag(row_wise)),
        ]),
        models: weights
            .iter()
            .map(|w| BTreeMap::from([("weight", Value::Number(*w))]))
            .collect(),
    };
    for (t, (name, shape)) in shapes().iter().enumerate() {
        let inputs = vec![x1[t].2.clone(), x2[t].2.clone()];
        let want = (MethodKind::NuSlerp.method().oracle)(&OracleCase {
            tensor: name,
            seed: 0,
            shape,
            base: base.as_ref().map(|b| b[t].2.as_slice()),
            inputs: &inputs,
            values: &values,
            statistics: &[],
        });
        assert_close(
            &format!("base {with_base} flatten {flatten} row_wise {row_wise} {name}"),
            &out.read_f32(name).unwrap(),
            &want,
            1e-6,
            1e-3,
        );
    }
}

#[test]
fn nuslerp_matches_its_oracle_in_every_mode() {
    for with_base in [true, false] {
        check(with_base, true, false, [0.3, 0.9]);
        check(with_base, false, false, [1.0, 2.0]);
        check(with_base, false, true, [0.6, 0.4]);
    }
    // Weights summing to zero: t = 0.5.
    check(true, false, true, [0.5, -0.5]);
}

#[test]
fn nuslerp_takes_exactly_two_models_and_their_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let t: Tensors = vec![("w".into(), vec![2, 2], vec![1.0, 2.0, 3.0, 4.0])];
    for m in ["a", "b", "c"] {
        write_model(&d.join(m), Dtype::F32, &t, 1 << 20, &[]).unwrap();
    }
    let model = |m: &str, w: &str| format!("  - model: {}\n{w}", p(d, m).display());
    let weight = "    parameters: {weight: 1.0}\n";
    let three = format!(
        "merge_method: nuslerp\nmodels:\n{}{}{}",
        model("a", weight),
        model("b", weight),
        model("c", weight)
    );
    let e = merge(d, &three, 0).unwrap_err().to_string();
    assert!(e.contains("exactly two"), "{e}");
    let unweighted = format!(
        "merge_method: nuslerp\nmodels:\n{}{}",
        model("a", weight),
        model("b", "")
    );
    let e = merge(d, &unweighted, 0).unwrap_err().to_string();
    assert!(e.contains("weight"), "{e}");
    // A base without a weight is fine: only the two merged models need one.
    let based = format!(
        "merge_method: nuslerp\nbase_model: {}\nmodels:\n{}{}",
        p(d, "c").display(),
        model("a", weight),
        model("b", weight)
    );
    merge(d, &based, 0).unwrap();
}
