//! Alignment (Git Re-Basin, activation matching, ZipIt, MuDSC) on a tiny multiway transformer:
//! planted permutations are recovered, zip is exact on identical models, errors name the culprit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{max_diff, random_weights};

use std::collections::BTreeMap;

use mmerge_core::hash::SplitMix64;
use mmerge_merge::align::{
    AlignError, AlignMethod, JointStats, Options, Side, Solver, Tensor, Transform, Unit, Weights,
    align_units, apply, expert_units, model_units, solve,
};

const D: usize = 8;
const F: usize = 16;
const HEADS: usize = 2;

/// The key set of a 2-layer multiway model with vision and text experts (d=8, f=16).
fn keys() -> Vec<(String, Vec<usize>)> {
    let mut k: Vec<(String, Vec<usize>)> = vec![
        ("embeddings.cls_token".into(), vec![1, 1, D]),
        ("embeddings.image_pos".into(), vec![1, 5, D]),
        ("embeddings.patch.weight".into(), vec![D, 3, 2, 2]),
        ("embeddings.patch.bias".into(), vec![D]),
        ("embeddings.word.weight".into(), vec![20, D]),
        ("embeddings.text_pos.weight".into(), vec![6, D]),
        ("embeddings.text_norm.weight".into(), vec![D]),
        ("embeddings.text_norm.bias".into(), vec![D]),
        ("embeddings.token_type.weight".into(), vec![3, D]),
        ("encoder.norm.weight".into(), vec![D]),
        ("encoder.norm.bias".into(), vec![D]),
        ("heads.itc.image_proj.weight".into(), vec![D, D]),
        ("heads.itc.text_proj.weight".into(), vec![D, D]),
        ("heads.itm.dense.weight".into(), vec![4, D]),
        ("heads.mlm.dense.weight".into(), vec![D, D]),
        ("heads.mlm.decoder.weight".into(), vec![20, D]),
    ];
    for i in 0..2 {
        let l = format!("encoder.layers.{i}");
        k.push((format!("{l}.gamma1"), vec![D]));
        k.push((format!("{l}.gamma2"), vec![D]));
        for e in ["vision", "text"] {
            for p in ["q", "k", "v", "out"] {
                k.push((format!("{l}.attn.{e}.{p}.weight"), vec![D, D]));
                k.push((format!("{l}.attn.{e}.{p}.bias"), vec![D]));
            }
            k.push((format!("{l}.ffn.{e}.fc1.weight"), vec![F, D]));
            k.push((format!("{l}.ffn.{e}.fc1.bias"), vec![F]));
            k.push((format!("{l}.ffn.{e}.fc2.weight"), vec![D, F]));
            k.push((format!("{l}.ffn.{e}.fc2.bias"), vec![D]));
            for n in ["norm1", "norm2"] {
                k.push((format!("{l}.{n}.{e}.weight"), vec![D]));
                k.push((format!("{l}.{n}.{e}.bias"), vec![D]));
            }
        }
    }
    k
}

fn random_perm(n: usize, rng: &mut SplitMix64) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        p.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    p
}

/// Heads permuted, and dims permuted within each head.
fn head_perm(n: usize, groups: usize, rng: &mut SplitMix64) -> Vec<usize> {
    let og = n / groups;
    let heads = random_perm(groups, rng);
    heads
        .iter()
        .flat_map(|&h| random_perm(og, rng).into_iter().map(move |x| h * og + x))
        .collect()
}

fn inverse(p: &[usize]) -> Vec<usize> {
    let mut q = vec![0; p.len()];
    for (i, &x) in p.iter().enumerate() {
        q[x] = i;
    }
    q
}

/// The unit axes of a key, written independently of `model_units`: (unit name, axis).
fn unit_axes(key: &str) -> Vec<(String, usize)> {
    let p: Vec<&str> = key.split('.').collect();
    let last2 = format!("{}.{}", p[p.len() - 2], p[p.len() - 1]);
    let residual_axis = match () {
        _ if key.ends_with("cls_token") || key.ends_with("image_pos") => Some(2),
        _ if key.starts_with("heads.") => (key != "heads.mlm.decoder.weight").then_some(1),
        _ if ["word.weight", "text_pos.weight", "token_type.weight"].contains(&last2.as_str()) => {
            Some(1)
        }
        _ if ["q.weight", "k.weight", "v.weight", "fc1.weight"].contains(&last2.as_str()) => {
            Some(1)
        }
        _ if ["q.bias", "k.bias", "v.bias", "fc1.bias"].contains(&last2.as_str()) => None,
        _ => Some(0),
    };
    let mut out: Vec<(String, usize)> = residual_axis
        .map(|a| ("residual".to_string(), a))
        .into_iter()
        .collect();
    if p.len() == 7 {
        let prefix = p[..5].join(".");
        let (unit, axis) = match (p[5], p[6]) {
            ("q" | "k", _) => ("qk", 0),
            ("v", _) => ("vo", 0),
            ("out", "weight") => ("vo", 1),
            ("fc1", _) => ("mlp", 0),
            ("fc2", "weight") => ("mlp", 1),
            _ => return out,
        };
        out.push((format!("{prefix}.{unit}"), axis));
    }
    out
}

/// new[.., j, ..] = old[.., perm[j], ..] on `axis`.
fn permute_axis(t: &Tensor, axis: usize, perm: &[usize]) -> Tensor {
    let outer: usize = t.shape[..axis].iter().product();
    let inner: usize = t.shape[axis + 1..].iter().product();
    let n = t.shape[axis];
    let mut data = vec![0.0; t.data.len()];
    for o in 0..outer {
        for j in 0..n {
            for x in 0..inner {
                data[(o * n + j) * inner + x] = t.data[(o * n + perm[j]) * inner + x];
            }
        }
    }
    Tensor {
        shape: t.shape.clone(),
        data,
    }
}

/// Planted permutations of every unit (head-structured for grouped units) and model B = A
/// with them applied to every axis.
fn planted(units: &[Unit], a: &Weights, seed: u64) -> (BTreeMap<String, Vec<usize>>, Weights) {
    let mut rng = SplitMix64::new(seed);
    let perms: BTreeMap<String, Vec<usize>> = units
        .iter()
        .map(|u| (u.name.clone(), head_perm(u.width, u.groups, &mut rng)))
        .collect();
    let b = a
        .iter()
        .map(|(k, t)| {
            let mut t = t.clone();
            for (unit, axis) in unit_axes(k) {
                t = permute_axis(&t, axis, &perms[&unit]);
            }
            (k.clone(), t)
        })
        .collect();
    (perms, b)
}

fn merged(base: &Weights, changed: Weights) -> Weights {
    let mut w = base.clone();
    w.extend(changed);
    w
}

/// Joint statistics where B's features are `perm`-ed A features plus noise.
fn planted_stats(width: usize, perm: &[usize], noise: f64, rng: &mut SplitMix64) -> JointStats {
    let mut s = JointStats::new(width);
    for _ in 0..300 {
        let fa: Vec<f64> = (0..width)
            .map(|_| f64::from(rng.signed_unit_f32()))
            .collect();
        let fb: Vec<f64> = perm
            .iter()
            .map(|&k| fa[k] + noise * f64::from(rng.signed_unit_f32()))
            .collect();
        s.push(&fa, &fb).unwrap();
    }
    s
}

fn all_stats(
    units: &[Unit],
    perms: &BTreeMap<String, Vec<usize>>,
    noise: f64,
) -> BTreeMap<String, JointStats> {
    let mut rng = SplitMix64::new(99);
    units
        .iter()
        .map(|u| {
            (
                u.name.clone(),
                planted_stats(u.width, &perms[&u.name], noise, &mut rng),
            )
        })
        .collect()
}

fn opts(method: &str, lambda: Option<f64>) -> Options {
    AlignMethod::from_name(method)
        .unwrap()
        .options(lambda)
        .unwrap()
}

#[test]
fn model_units_cover_the_multiway_spec() {
    let units = model_units(&keys(), HEADS).unwrap();
    // 1 residual + 2 layers × 2 experts × (qk, vo, mlp).
    assert_eq!(units.len(), 13);
    let res = &units[0];
    assert_eq!(
        (res.name.as_str(), res.width, res.groups),
        ("residual", D, 1)
    );
    // Every key but the mlm decoder reads or writes the residual stream, except q/k/v/fc1 biases.
    let n_bias = 2 * 2 * 4;
    assert_eq!(res.a.len(), keys().len() - 1 - n_bias);
    let qk = units
        .iter()
        .find(|u| u.name == "encoder.layers.1.attn.text.qk")
        .unwrap();
    assert_eq!((qk.width, qk.groups, qk.a.len()), (D, HEADS, 4));
    let mlp = units
        .iter()
        .find(|u| u.name == "encoder.layers.0.ffn.vision.mlp")
        .unwrap();
    assert_eq!((mlp.width, mlp.groups), (F, 1));
    assert_eq!(
        mlp.a.last().unwrap().key,
        "encoder.layers.0.ffn.vision.fc2.weight"
    );
}

#[test]
fn weight_matching_undoes_planted_permutations() {
    let keys = keys();
    let units = model_units(&keys, HEADS).unwrap();
    let a = random_weights(&keys, 1);
    let (perms, b) = planted(&units, &a, 2);
    let t = align_units(&a, &b, &units, None, &opts("weight_matching", None)).unwrap();
    for u in &units {
        assert_eq!(
            t[&u.name],
            Transform::Perm(inverse(&perms[&u.name])),
            "{}",
            u.name
        );
    }
    let aligned = merged(&b, apply(&b, &units, Side::B, &t).unwrap());
    assert!(max_diff(&aligned, &a) < 1e-6);
    // Model A is left as it is.
    let same = merged(&a, apply(&a, &units, Side::A, &t).unwrap());
    assert_eq!(max_diff(&same, &a), 0.0);
}

#[test]
fn expert_units_align_text_to_vision() {
    let keys = keys();
    let units = expert_units(&keys, HEADS, "vision", "text").unwrap();
    assert_eq!(units.len(), 6);
    assert_eq!(units[0].name, "encoder.layers.0.attn.vision+text.qk");
    assert_eq!(units[0].b[0].key, "encoder.layers.0.attn.text.q.weight");
    // Text experts = vision experts with planted permutations of their inner units (in expert
    // mode every text key is in exactly one unit).
    let mut w = random_weights(&keys, 3);
    let mut rng = SplitMix64::new(4);
    let mut planted = BTreeMap::new();
    for u in &units {
        let p = head_perm(u.width, u.groups, &mut rng);
        for (ma, mb) in u.a.iter().zip(&u.b) {
            let t = permute_axis(&w[&ma.key], ma.axis, &p);
            w.insert(mb.key.clone(), t);
        }
        planted.insert(u.name.clone(), p);
    }
    let t = align_units(&w, &w, &units, None, &opts("weight_matching", None)).unwrap();
    for u in &units {
        assert_eq!(
            t[&u.name],
            Transform::Perm(inverse(&planted[&u.name])),
            "{}",
            u.name
        );
    }
    let text = apply(&w, &units, Side::B, &t).unwrap();
    for (k, tensor) in &text {
        let vision = &w[&k.replacen(".text.", ".vision.", 1)];
        assert!(
            tensor
                .data
                .iter()
                .zip(&vision.data)
                .all(|(x, y)| (x - y).abs() < 1e-6),
            "{k}"
        );
    }
}

#[test]
fn group_align_recovers_head_and_dim_permutations() {
    let mut rng = SplitMix64::new(5);
    let (o, g) = (12, 3);
    let perm = head_perm(o, g, &mut rng);
    let s = planted_stats(o, &perm, 0.01, &mut rng)
        .correlation()
        .unwrap();
    let (t, value) = solve(&s, o, g, &Solver::Align).unwrap();
    assert_eq!(t, Transform::Perm(inverse(&perm)));
    assert!(value > 0.99, "{value}");
    // On a similarity without structure the heads still move whole.
    let noise: Vec<f64> = (0..4 * o * o)
        .map(|_| f64::from(rng.signed_unit_f32()))
        .collect();
    let Transform::Perm(p) = solve(&noise, o, g, &Solver::Align).unwrap().0 else {
        panic!("align gives a permutation")
    };
    let og = o / g;
    for head in p.chunks(og) {
        assert!(head.iter().all(|&x| x / og == head[0] / og), "{p:?}");
    }
}

#[test]
fn lambda_zero_is_activation_matching_and_lambda_one_ignores_activations() {
    let keys = keys();
    let units = model_units(&keys, HEADS).unwrap();
    let a = random_weights(&keys, 1);
    let (_, b) = planted(&units, &a, 2);
    // Activations planted with other permutations than the weights.
    let (act_perms, _) = planted(&units, &a, 7);
    let stats = all_stats(&units, &act_perms, 0.05);
    let act = align_units(
        &a,
        &b,
        &units,
        Some(&stats),
        &opts("activation_matching", None),
    )
    .unwrap();
    for u in &units {
        let s = stats[&u.name].correlation().unwrap();
        let direct = solve(&s, u.width, u.groups, &Solver::Align).unwrap().0;
        assert_eq!(act[&u.name], direct, "{}", u.name);
        assert_eq!(act[&u.name], Transform::Perm(inverse(&act_perms[&u.name])));
    }
    let with = align_units(&a, &b, &units, Some(&stats), &opts("weight_matching", None)).unwrap();
    let without = align_units(&a, &b, &units, None, &opts("weight_matching", None)).unwrap();
    assert_eq!(with, without);
}

#[test]
fn mudsc_align_recovers_consistent_permutations_deterministically() {
    let keys = keys();
    let units = model_units(&keys, HEADS).unwrap();
    let a = random_weights(&keys, 11);
    let (perms, b) = planted(&units, &a, 12);
    let stats = all_stats(&units, &perms, 0.2);
    let o = opts("mudsc_align", Some(0.5));
    let t = align_units(&a, &b, &units, Some(&stats), &o).unwrap();
    for u in &units {
        assert_eq!(
            t[&u.name],
            Transform::Perm(inverse(&perms[&u.name])),
            "{}",
            u.name
        );
    }
    assert_eq!(t, align_units(&a, &b, &units, Some(&stats), &o).unwrap());
}

#[test]
fn zip_columns_are_normalised_partitions() {
    let mut rng = SplitMix64::new(21);
    for (o, g) in [(8, 1), (12, 3)] {
        let perm = random_perm(o, &mut rng);
        let s = planted_stats(o, &perm, 0.8, &mut rng)
            .correlation()
            .unwrap();
        let (t, _) = solve(&s, o, g, &Solver::ZIP).unwrap();
        let Transform::Zip {
            merge,
            unmerge,
            new_width,
        } = t
        else {
            panic!("zip")
        };
        assert_eq!(new_width, o);
        for c in 0..new_width {
            let sum: f64 = (0..o)
                .map(|k| merge[0][k * o + c] + merge[1][k * o + c])
                .sum();
            assert!((sum - 1.0).abs() < 1e-12, "column {c} sums to {sum}");
        }
        for m in &unmerge {
            for k in 0..o {
                let row = &m[k * o..(k + 1) * o];
                assert_eq!(row.iter().sum::<f64>(), 1.0, "feature {k} in one column");
            }
        }
    }
}

#[test]
fn zip_of_identical_models_pairs_twins_and_gives_back_the_model() {
    let keys = keys();
    let units = model_units(&keys, HEADS).unwrap();
    let a = random_weights(&keys, 31);
    let identity: BTreeMap<String, Vec<usize>> = units
        .iter()
        .map(|u| (u.name.clone(), (0..u.width).collect()))
        .collect();
    let stats = all_stats(&units, &identity, 0.0);
    let t = align_units(&a, &a, &units, Some(&stats), &opts("zipit", None)).unwrap();
    for u in &units {
        let Transform::Zip {
            merge,
            unmerge,
            new_width,
        } = &t[&u.name]
        else {
            panic!("zip")
        };
        assert_eq!(*new_width, u.width);
        for k in 0..u.width {
            let at = k * new_width + k;
            assert_eq!(
                (merge[0][at], merge[1][at]),
                (0.5, 0.5),
                "{} feature {k}",
                u.name
            );
            assert_eq!((unmerge[0][at], unmerge[1][at]), (1.0, 1.0));
        }
    }
    // MuDSC-Zip (S_W of zipped neighbours included) finds the same twins.
    let mudsc = align_units(&a, &a, &units, Some(&stats), &opts("mudsc_zip", None)).unwrap();
    assert_eq!(mudsc, t);
    let za = apply(&a, &units, Side::A, &t).unwrap();
    let zb = apply(&a, &units, Side::B, &t).unwrap();
    let avg: Weights = za
        .iter()
        .map(|(k, x)| {
            let data = x
                .data
                .iter()
                .zip(&zb[k].data)
                .map(|(p, q)| (p + q) / 2.0)
                .collect();
            (
                k.clone(),
                Tensor {
                    shape: x.shape.clone(),
                    data,
                },
            )
        })
        .collect();
    assert_eq!(avg.len(), keys.len() - 1, "every key but the mlm decoder");
    assert!(max_diff(&merged(&a, avg), &a) < 1e-6);
}

#[test]
fn perm_then_inverse_is_the_identity_and_zip_shapes_shrink() {
    let keys = keys();
    let units = model_units(&keys, HEADS).unwrap();
    let b = random_weights(&keys, 41);
    let mut rng = SplitMix64::new(42);
    let fwd: BTreeMap<String, Transform> = units
        .iter()
        .map(|u| {
            (
                u.name.clone(),
                Transform::Perm(random_perm(u.width, &mut rng)),
            )
        })
        .collect();
    let back: BTreeMap<String, Transform> = fwd
        .iter()
        .map(|(k, t)| match t {
            Transform::Perm(p) => (k.clone(), Transform::Perm(inverse(p))),
            Transform::Zip { .. } => unreachable!(),
        })
        .collect();
    let b1 = merged(&b, apply(&b, &units, Side::B, &fwd).unwrap());
    assert!(max_diff(&b1, &b) > 0.1);
    let b2 = merged(&b1, apply(&b1, &units, Side::B, &back).unwrap());
    assert_eq!(max_diff(&b2, &b), 0.0);

    let identity: BTreeMap<String, Vec<usize>> = units
        .iter()
        .map(|u| (u.name.clone(), (0..u.width).collect()))
        .collect();
    let stats = all_stats(&units, &identity, 0.3);
    let mut o = opts("zipit", None);
    o.solver = Solver::Zip {
        r: 0.75,
        a: 0.5,
        b: 1.0,
    };
    let t = align_units(&b, &b, &units, Some(&stats), &o).unwrap();
    assert_eq!(t["residual"].new_width(), 4);
    assert_eq!(t["encoder.layers.0.attn.vision.qk"].new_width(), 4);
    assert_eq!(t["encoder.layers.0.ffn.vision.mlp"].new_width(), 8);
    let z = apply(&b, &units, Side::B, &t).unwrap();
    let shape = |k: &str| z[k].shape.clone();
    assert_eq!(shape("embeddings.cls_token"), [1, 1, 4]);
    assert_eq!(shape("embeddings.word.weight"), [20, 4]);
    assert_eq!(shape("embeddings.patch.weight"), [4, 3, 2, 2]);
    assert_eq!(shape("encoder.layers.0.attn.vision.q.weight"), [4, 4]);
    assert_eq!(shape("encoder.layers.0.attn.vision.out.weight"), [4, 4]);
    assert_eq!(shape("encoder.layers.1.ffn.text.fc1.weight"), [8, 4]);
    assert_eq!(shape("encoder.layers.1.ffn.text.fc1.bias"), [8]);
    assert_eq!(shape("encoder.layers.1.ffn.text.fc2.weight"), [4, 8]);
    assert_eq!(shape("heads.itm.dense.weight"), [4, 4]);
    assert!(!z.contains_key("heads.mlm.decoder.weight"));
}

#[test]
fn errors_name_the_value_unit_or_key() {
    let keys = keys();
    let units = model_units(&keys, HEADS).unwrap();
    let a = random_weights(&keys, 1);
    let msg = |r: Result<BTreeMap<String, Transform>, AlignError>| r.unwrap_err().to_string();

    let mut o = opts("mudsc_align", None);
    assert_eq!(o.lambda, 0.5);
    o.lambda = 1.5;
    assert_eq!(
        msg(align_units(&a, &a, &units, None, &o)),
        "λ = 1.5 is outside [0, 1]"
    );
    o.lambda = 0.5;
    let e = msg(align_units(&a, &a, &units, None, &o));
    assert!(e.contains("`residual`") && e.contains("λ = 0.5"), "{e}");

    let mut stats = BTreeMap::new();
    stats.insert("residual".to_string(), JointStats::new(3));
    let e = msg(align_units(&a, &a, &units[..1], Some(&stats), &o));
    assert!(e.contains("`residual`") && e.contains("width 3"), "{e}");

    let mut b = a.clone();
    b.remove("encoder.layers.1.ffn.text.fc1.bias");
    let e = msg(align_units(
        &a,
        &b,
        &units,
        None,
        &opts("weight_matching", None),
    ));
    assert_eq!(
        e,
        "tensor `encoder.layers.1.ffn.text.fc1.bias` is missing from model B"
    );

    let mut bad = keys.clone();
    bad.iter_mut()
        .find(|(k, _)| k == "encoder.norm.weight")
        .unwrap()
        .1 = vec![D + 1];
    let e = model_units(&bad, HEADS).unwrap_err().to_string();
    assert!(
        e.contains("`encoder.norm.weight`") && e.contains("length 9, expected 8"),
        "{e}"
    );

    let e = model_units(&keys, 3).unwrap_err().to_string();
    assert!(e.contains("3 groups do not divide width 8"), "{e}");

    let mut unknown = keys.clone();
    unknown.push(("encoder.layers.0.attn.vision.rotary".into(), vec![D]));
    let e = model_units(&unknown, HEADS).unwrap_err().to_string();
    assert!(e.contains("`encoder.layers.0.attn.vision.rotary`"), "{e}");

    let e = AlignMethod::from_name("rebasin").unwrap_err().to_string();
    assert!(
        e.contains("`rebasin`") && e.contains("weight_matching, activation_matching"),
        "{e}"
    );
    let e = AlignMethod::WeightMatching
        .options(Some(0.3))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("0.3") && e.contains("weight_matching fixes λ = 1"),
        "{e}"
    );
    for name in AlignMethod::NAMES {
        assert_eq!(AlignMethod::from_name(name).unwrap().name(), name);
    }
    let e = solve(
        &[0.0; 16],
        2,
        1,
        &Solver::Zip {
            r: 1.0,
            a: 0.5,
            b: 1.0,
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("`r` = 1"), "{e}");
}
