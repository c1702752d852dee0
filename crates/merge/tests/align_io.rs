//! Alignment on checkpoints (`align::io`): activation statistics round-trip bit-exactly, model
//! mode undoes planted permutations, expert-mode zip keeps shapes and averages to ZipIt's
//! merge, and every refusal names its cause.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{max_diff, random_weights};

use std::collections::BTreeMap;
use std::path::Path;

use mmerge_core::hash::SplitMix64;
use mmerge_core::{Checkpoint, Dtype};
use mmerge_merge::MergeError;
use mmerge_merge::align::io::load_weights;
use mmerge_merge::align::{
    AlignMethod, JointStats, Side, Tensor, Transform, Weights, align_checkpoints, align_experts,
    apply, expert_units, model_units, read_joint_stats, write_joint_stats,
};

const D: usize = 8;
const F: usize = 12;
const HEADS: usize = 2;

/// A 2-layer multiway checkpoint (vision, text; layer 1 also vl) with random weights.
fn keys() -> Vec<(String, Vec<usize>)> {
    let mut k: Vec<(String, Vec<usize>)> = vec![
        ("embeddings.cls_token".into(), vec![1, 1, D]),
        ("embeddings.patch.weight".into(), vec![D, 3, 2, 2]),
        ("embeddings.image_pos".into(), vec![1, 5, D]),
        ("embeddings.word.weight".into(), vec![20, D]),
        ("embeddings.text_pos.weight".into(), vec![6, D]),
        ("embeddings.token_type.weight".into(), vec![3, D]),
        ("encoder.norm.weight".into(), vec![D]),
        ("encoder.norm.bias".into(), vec![D]),
    ];
    for i in 0..2 {
        let l = format!("encoder.layers.{i}");
        let experts: &[&str] = if i == 1 {
            &["vision", "text", "vl"]
        } else {
            &["vision", "text"]
        };
        for e in experts {
            for p in ["q", "k", "v", "out"] {
                k.push((format!("{l}.attn.{e}.{p}.weight"), vec![D, D]));
                k.push((format!("{l}.attn.{e}.{p}.bias"), vec![D]));
            }
            k.push((format!("{l}.ffn.{e}.fc1.weight"), vec![F, D]));
            k.push((format!("{l}.ffn.{e}.fc1.bias"), vec![F]));
            k.push((format!("{l}.ffn.{e}.fc2.weight"), vec![D, F]));
            k.push((format!("{l}.ffn.{e}.fc2.bias"), vec![D]));
            k.push((format!("{l}.norm1.{e}.weight"), vec![D]));
        }
    }
    k
}

fn save(dir: &Path, w: &Weights, config: &str) {
    let t: Vec<(String, Vec<usize>, Vec<f32>)> = w
        .iter()
        .map(|(k, t)| (k.clone(), t.shape.clone(), t.data.clone()))
        .collect();
    let files: &[(&str, &[u8])] = &[("config.json", config.as_bytes()), ("vocab.txt", b"a\nb")];
    mmerge_core::writer::write_model(dir, Dtype::F32, &t, 1 << 20, files).unwrap();
}

const CONFIG: &str = "{\"num_attention_heads\": 2, \"hidden_size\": 8}";

fn load(dir: &Path) -> Weights {
    load_weights(&Checkpoint::open(dir).unwrap()).unwrap()
}

fn shuffle(n: usize, rng: &mut SplitMix64) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        p.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    p
}

fn method(name: &str, lambda: Option<f64>) -> (AlignMethod, mmerge_merge::align::Options) {
    let m = AlignMethod::from_name(name).unwrap();
    (m, m.options(lambda).unwrap())
}

/// Joint statistics from `n` random samples.
fn random_stats(width: usize, rng: &mut SplitMix64) -> JointStats {
    let mut s = JointStats::new(width);
    for _ in 0..20 {
        let f: Vec<f64> = (0..2 * width)
            .map(|_| f64::from(rng.signed_unit_f32()))
            .collect();
        s.push(&f[..width], &f[width..]).unwrap();
    }
    s
}

#[test]
fn joint_stats_round_trip_bit_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let units = expert_units(&keys(), HEADS, "vision", "text").unwrap();
    let mut rng = SplitMix64::new(5);
    let mut stats: BTreeMap<String, JointStats> = units
        .iter()
        .take(2)
        .map(|u| (u.name.clone(), random_stats(u.width, &mut rng)))
        .collect();
    stats.values_mut().next().unwrap().sum[0] = 0.1 + 0.2; // not representable in f32
    write_joint_stats(tmp.path(), &stats).unwrap();
    let back = read_joint_stats(tmp.path(), &units).unwrap();
    assert_eq!(back.len(), 2, "units without tensors are absent");
    for (name, s) in &stats {
        let b = &back[name];
        assert_eq!((b.width, b.count.to_bits()), (s.width, s.count.to_bits()));
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&b.sum), bits(&s.sum), "{name}");
        assert_eq!(bits(&b.outer), bits(&s.outer), "{name}");
    }
    // Replaced atomically, nothing else left in the folder.
    write_joint_stats(tmp.path(), &stats).unwrap();
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    // A unit of another width: its shapes are named.
    let mut wide = units[0].clone();
    wide.width = 4;
    let err = read_joint_stats(tmp.path(), &[wide])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!(
            "`{}.sum`: shape [16], expected [8]",
            units[0].name
        )),
        "{err}"
    );
}

#[test]
fn model_mode_undoes_planted_head_consistent_permutations() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = keys();
    let a = random_weights(&keys, 1);
    let units = model_units(&keys, HEADS).unwrap();
    // B = A with every unit permuted; QK and VO of one attention expert move heads alike.
    let mut rng = SplitMix64::new(2);
    let mut heads = BTreeMap::new();
    let planted: BTreeMap<String, Transform> = units
        .iter()
        .map(|u| {
            let og = u.width / u.groups;
            let order = heads
                .entry(
                    u.name
                        .rsplit_once('.')
                        .map_or(u.name.as_str(), |p| p.0)
                        .to_string(),
                )
                .or_insert_with(|| shuffle(u.groups, &mut rng))
                .clone();
            let p = order
                .iter()
                .flat_map(|&h| shuffle(og, &mut rng).into_iter().map(move |x| h * og + x))
                .collect();
            (u.name.clone(), Transform::Perm(p))
        })
        .collect();
    let mut b = a.clone();
    b.extend(apply(&a, &units, Side::B, &planted).unwrap());
    assert!(max_diff(&a, &b) > 0.5);
    save(&tmp.path().join("a"), &a, CONFIG);
    save(&tmp.path().join("b"), &b, CONFIG);
    let out = tmp.path().join("out");
    let (m, o) = method("weight_matching", None);
    let s = align_checkpoints(
        &tmp.path().join("a"),
        &tmp.path().join("b"),
        &out,
        false,
        m,
        &o,
        None,
    )
    .unwrap();
    assert_eq!(s.units, units.len());
    for u in &units {
        let Transform::Perm(p) = &planted[&u.name] else {
            unreachable!()
        };
        let mut inverse = vec![0; p.len()];
        for (i, &x) in p.iter().enumerate() {
            inverse[x] = i;
        }
        assert_eq!(
            s.transforms[&u.name],
            Transform::Perm(inverse),
            "{}",
            u.name
        );
    }
    let mean = s.mean_similarity.unwrap();
    assert!(mean > 0.999_999, "{mean}");
    let d = max_diff(&load(&out), &a);
    assert!(d < 1e-6, "aligned B differs from A by {d}");
    assert_eq!(std::fs::read(out.join("vocab.txt")).unwrap(), b"a\nb");
    assert_eq!(
        std::fs::read_to_string(out.join("config.json")).unwrap(),
        CONFIG
    );

    // The same through a merge config: `align:` permutes B into A before averaging, so the
    // average of A and aligned B is A; without it the average is far from A.
    let merge = |align: &str| merge_pair(tmp.path(), align);
    let aligned = merge("align: {method: weight_matching}\n").unwrap();
    let d = max_diff(&aligned, &a);
    assert!(d < 1e-6, "aligned merge differs from A by {d}");
    let plain = merge("").unwrap();
    assert!(max_diff(&plain, &a) > 0.1);
    // Unknown methods are named with the valid ones.
    let e = merge("align: {method: matching}\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("matching") && e.contains("mudsc_align"), "{e}");
}

/// The merged tensor of ZipIt on one unit, independently: fc1 (Out) Σᵢ mergeᵢᵀ Wᵢ and fc2 (In)
/// ½ Σᵢ Wᵢ unmergeᵢ.
fn zipit_merge(w: [&Tensor; 2], t: &Transform, out_axis: bool) -> Vec<f64> {
    let Transform::Zip {
        merge,
        unmerge,
        new_width: n,
    } = t
    else {
        panic!("zip")
    };
    let (rows, cols) = (w[0].shape[0], w[0].shape[1]);
    let mut m = vec![0.0; rows * cols];
    for i in 0..2 {
        let x = |r: usize, c: usize| f64::from(w[i].data[r * cols + c]);
        for r in 0..rows {
            for c in 0..cols {
                m[r * cols + c] += if out_axis {
                    (0..rows)
                        .map(|k| merge[i][k * n + r] * x(k, c))
                        .sum::<f64>()
                } else {
                    0.5 * (0..cols)
                        .map(|k| x(r, k) * unmerge[i][k * n + c])
                        .sum::<f64>()
                };
            }
        }
    }
    m
}

#[test]
fn expert_zip_keeps_shapes_and_averages_to_zipit() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = keys();
    let w = random_weights(&keys, 3);
    let mw = tmp.path().join("mw");
    save(&mw, &w, CONFIG);
    let mut stats = BTreeMap::new();
    let mut rng = SplitMix64::new(4);
    for other in ["text", "vl"] {
        for u in expert_units(&keys, HEADS, "vision", other).unwrap() {
            stats.insert(u.name.clone(), random_stats(u.width, &mut rng));
        }
    }
    let st = tmp.path().join("stats");
    write_joint_stats(&st, &stats).unwrap();
    let out = tmp.path().join("zip");
    let (m, o) = method("zipit", None);
    let s = align_experts(
        &mw,
        &out,
        false,
        "vision",
        &["text", "vl"],
        m,
        &o,
        Some(&st),
    )
    .unwrap();
    assert_eq!(
        s.units, 9,
        "3 (layer 0) + 3 (layer 1) vision+text, 3 vision+vl"
    );
    assert_eq!(s.mean_similarity, None);
    let z = load(&out);
    let mut worst = 0.0f64;
    for layer in 0..2 {
        let t = &s.transforms[&format!("encoder.layers.{layer}.ffn.vision+text.mlp")];
        for (p, out_axis) in [("fc1", true), ("fc2", false)] {
            let key = |e: &str| format!("encoder.layers.{layer}.ffn.{e}.{p}.weight");
            let want = zipit_merge([&w[&key("vision")], &w[&key("text")]], t, out_axis);
            let (zv, zt) = (&z[&key("vision")], &z[&key("text")]);
            assert_eq!(zv.shape, w[&key("vision")].shape);
            for (i, x) in want.iter().enumerate() {
                let avg = (f64::from(zv.data[i]) + f64::from(zt.data[i])) / 2.0;
                worst = worst.max((avg - x).abs());
            }
        }
    }
    assert!(worst < 1e-5, "average vs ZipIt merge: {worst}");
    // Not in any unit: copied byte for byte.
    for k in ["embeddings.word.weight", "encoder.layers.1.norm1.vl.weight"] {
        assert_eq!(z[k], w[k], "{k}");
    }
    // The VL expert changed (aligned, then zipped on the reference's side).
    assert_ne!(
        z["encoder.layers.1.ffn.vl.fc1.weight"],
        w["encoder.layers.1.ffn.vl.fc1.weight"]
    );

    // Identical experts: the zip and the VL rule give the checkpoint back.
    let mut same = w.clone();
    for (k, t) in &w {
        if k.contains(".vision.") {
            for e in ["text", "vl"] {
                let twin = k.replace(".vision.", &format!(".{e}."));
                if same.contains_key(&twin) {
                    same.insert(twin, t.clone());
                }
            }
        }
    }
    let mw2 = tmp.path().join("same");
    save(&mw2, &same, CONFIG);
    let out2 = tmp.path().join("same-zip");
    let (m, o) = method("mudsc_zip", Some(1.0));
    align_experts(&mw2, &out2, false, "vision", &["text", "vl"], m, &o, None).unwrap();
    let d = max_diff(&load(&out2), &same);
    assert!(d < 1e-6, "{d}");
}

#[test]
fn refusals_name_their_cause() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = keys();
    let w = random_weights(&keys, 7);
    let a = tmp.path().join("a");
    save(&a, &w, CONFIG);
    let out = tmp.path().join("out");
    let model = |name: &str, lambda| {
        let (m, o) = method(name, lambda);
        align_checkpoints(&a, &a, &out, false, m, &o, None)
            .unwrap_err()
            .to_string()
    };
    let e = model("zipit", None);
    assert!(
        e.contains("`zipit`: zip transforms both models; use `zip_checkpoints`"),
        "{e}"
    );
    let e = model("mudsc_align", Some(0.5));
    assert!(e.contains("λ = 0.5 < 1") && e.contains("--pair B"), "{e}");

    let nohead = tmp.path().join("nohead");
    save(&nohead, &w, "{\"hidden_size\": 8}");
    let (m, o) = method("weight_matching", None);
    let e = align_checkpoints(&nohead, &nohead, &out, false, m, &o, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&nohead.join("config.json").display().to_string())
            && e.contains("num_attention_heads"),
        "{e}"
    );

    let experts = |reference: &str, others: &[&str], name: &str, lambda, st: Option<&Path>| {
        let (m, o) = method(name, lambda);
        align_experts(&a, &out, false, reference, others, m, &o, st).unwrap_err()
    };
    let e = experts("vision", &["audio"], "weight_matching", None, None).to_string();
    assert_eq!(
        e,
        "expert `audio`: not stored in this checkpoint (stored: text, vision, vl)"
    );
    let e = experts("vision", &["vision"], "weight_matching", None, None).to_string();
    assert!(e.contains("named twice"), "{e}");
    let e = experts("vision", &["text"], "mudsc_align", None, None).to_string();
    assert!(e.contains("needs activation statistics"), "{e}");
    // A statistics folder without some unit: align_units names it.
    let st = tmp.path().join("st");
    write_joint_stats(&st, &BTreeMap::new()).unwrap();
    let e = experts("vision", &["text"], "activation_matching", None, Some(&st));
    assert!(
        matches!(&e, MergeError::Align(_))
            && e.to_string().contains("has no activation statistics"),
        "{e}"
    );
    assert!(!out.exists(), "no output after a refusal");
    // An existing output is refused without force and replaced with it.
    std::fs::create_dir(&out).unwrap();
    let (m, o) = method("weight_matching", None);
    let e = align_experts(&a, &out, false, "vision", &["text"], m, &o, None).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    align_experts(&a, &out, true, "vision", &["text"], m, &o, None).unwrap();
    assert!(Checkpoint::open(&out).is_ok());
}

#[test]
fn a_merge_config_zips_or_aligns_a_pair_on_joint_activations() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let keys = keys();
    let a = random_weights(&keys, 5);
    save(&d.join("a"), &a, CONFIG);
    save(&d.join("b"), &a, CONFIG);
    // Joint statistics of two identical models: every unit's features equal on both sides.
    let units = model_units(&keys, HEADS).unwrap();
    let mut rng = SplitMix64::new(9);
    let stats: BTreeMap<String, JointStats> = units
        .iter()
        .map(|u| {
            let mut js = JointStats::new(u.width);
            for _ in 0..64 {
                let f: Vec<f64> = (0..u.width)
                    .map(|_| f64::from(rng.signed_unit_f32()))
                    .collect();
                js.push(&f, &f).unwrap();
            }
            (u.name.clone(), js)
        })
        .collect();
    write_joint_stats(&d.join("stats"), &stats).unwrap();
    let merge = |align: &str| merge_pair(d, align);
    let stats_dir = d.join("stats");
    // Zipping two identical models pairs every feature with its twin: the merge is the model.
    for method in ["zipit", "mudsc_zip", "activation_matching", "mudsc_align"] {
        let out = merge(&format!(
            "align: {{method: {method}, statistics: {}}}\n",
            stats_dir.display()
        ))
        .unwrap_or_else(|e| panic!("{method}: {e}"));
        let diff = max_diff(&out, &a);
        assert!(
            diff < 1e-5,
            "{method}: merge of aligned twins differs by {diff}"
        );
    }
    // λ < 1 without statistics is named, with the command that makes them.
    let e = merge("align: {method: zipit}\n").unwrap_err().to_string();
    assert!(e.contains("merge.yml:7") && e.contains("--pair B"), "{e}");
}

/// Merges `d/a` and `d/b` half and half with `align` (a YAML line or nothing) into `d/merged`.
fn merge_pair(d: &Path, align: &str) -> Result<Weights, MergeError> {
    let yaml = format!(
        "merge_method: linear\nmodels:\n  - model: {}\n    parameters: {{weight: 0.5}}\n  - model: {}\n    parameters: {{weight: 0.5}}\n{align}",
        d.join("a").display(),
        d.join("b").display()
    );
    let path = d.join("merge.yml");
    std::fs::write(&path, &yaml).unwrap();
    let cfg = mmerge_merge::MergeConfig::from_yaml(&yaml, &path)?;
    let plan = mmerge_merge::MergePlan::new(&cfg, &path, 0)?;
    let mut opts = mmerge_merge::MergeOptions::new(d.join("merged"));
    opts.force = true;
    mmerge_merge::run(&plan, &yaml, &opts, &indicatif::ProgressBar::hidden())?;
    Ok(load(&d.join("merged")))
}
