use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use mmerge_core::{Checkpoint, CheckpointWriter, Dtype, OutputTensor, TensorRole};

use super::assert_close;
use crate::compare::{Mode, compare, compare_with_progress};
use crate::distance::DistanceOptions;
use crate::oracle;

/// (name, dtype, shape); values come from `fill`.
type Spec = (&'static str, Dtype, Vec<usize>);

fn specs() -> Vec<Spec> {
    vec![
        ("embeddings.word_embeddings.weight", Dtype::F32, vec![10, 8]),
        (
            "encoder.layers.0.attn.vision.qkv.weight",
            Dtype::F32,
            vec![8, 8],
        ),
        (
            "encoder.layers.0.attn.vision.qkv.bias",
            Dtype::BF16,
            vec![8],
        ),
        ("encoder.layers.0.step", Dtype::I64, vec![1]),
        (
            "encoder.layers.1.ffn.text.fc1.weight",
            Dtype::F16,
            vec![16, 8],
        ),
        ("encoder.layers.1.ffn.text.fc1.bias", Dtype::F32, vec![16]),
        ("encoder.norm.weight", Dtype::F32, vec![8]),
        ("head.weight", Dtype::F32, vec![3, 8]),
    ]
}

/// Deterministic values with zeros and many ties: a small grid plus a continuous part.
fn fill(seed: u64, n: usize) -> Vec<f32> {
    let mut g = mmerge_core::hash::SplitMix64::new(seed);
    (0..n)
        .map(|_| {
            let r = (g.next_u64() >> 33) as u32;
            match r % 4 {
                0 => 0.0,
                1 => [-1.0, -0.5, 0.5, 1.0][(r >> 8) as usize % 4],
                _ => ((r >> 8) % 20001) as f32 / 1000.0 - 10.0,
            }
        })
        .collect()
}

/// Writes a checkpoint with tiny shards; `values(name, numel)` gives each float tensor.
fn write(dir: &Path, specs: &[Spec], values: impl Fn(&str, usize) -> Vec<f32>) -> PathBuf {
    let outs: Vec<_> = specs
        .iter()
        .map(|(n, d, s)| OutputTensor::new(*n, *d, s.clone()))
        .collect();
    let w = CheckpointWriter::create(dir, &outs, 300, false).unwrap();
    for (name, dtype, shape) in specs {
        let n: usize = shape.iter().product();
        if dtype.is_float() {
            w.write_f32(name, 0, &values(name, n)).unwrap();
        } else {
            w.write_bytes(name, 0, &vec![7u8; n * dtype.size()])
                .unwrap();
        }
    }
    w.finish().unwrap()
}

fn seeded(offset: u64) -> impl Fn(&str, usize) -> Vec<f32> {
    move |name, n| fill(name.len() as u64 * 31 + offset, n)
}

fn opts() -> DistanceOptions {
    DistanceOptions {
        tssd_top_k_percent: 20.0,
        chunk_len: 7,
    }
}

#[test]
fn sharded_folders_match_the_oracle() {
    let tmp = tempfile::tempdir().unwrap();
    let pa = write(&tmp.path().join("a"), &specs(), seeded(1));
    let pb = write(&tmp.path().join("b"), &specs(), seeded(2));
    assert!(
        pa.join(mmerge_core::checkpoint::INDEX_FILE).is_file(),
        "several shards"
    );
    let (a, b) = (
        Checkpoint::open(&pa).unwrap(),
        Checkpoint::open(&pb).unwrap(),
    );
    let bar = ProgressBar::hidden();
    let r = compare_with_progress(&a, &b, None, &opts(), Some(&bar)).unwrap();

    let float: Vec<_> = a
        .names()
        .iter()
        .filter(|n| a.meta(n).unwrap().dtype.is_float())
        .collect();
    let pair = |n: &str| (a.read_f32(n).unwrap(), b.read_f32(n).unwrap());
    assert_eq!(r.mode, Mode::Weights);
    assert_eq!(r.tensors.len(), float.len());
    assert_eq!(bar.position(), 80 + 64 + 8 + 128 + 16 + 8 + 24);
    assert_eq!(bar.length(), Some(bar.position()));
    for (t, name) in r.tensors.iter().zip(&float) {
        assert_eq!(&t.name, *name, "a's storage order");
        let (x, y) = pair(name);
        assert_close(&t.distance.distances(), oracle::all(&x, &y, 20.0), name);
    }
    let group =
        |names: &[&String]| oracle::group(&names.iter().map(|n| pair(n)).collect::<Vec<_>>(), 20.0);
    assert_close(&r.aggregate.distances(), group(&float), "aggregate");
    assert_eq!(r.aggregate.tensors, float.len());

    let roles: Vec<TensorRole> = r.layers.iter().map(|l| l.role).collect();
    assert_eq!(
        roles,
        [
            TensorRole::Pre,
            TensorRole::Layer(0),
            TensorRole::Layer(1),
            TensorRole::Post
        ]
    );
    for l in &r.layers {
        let names: Vec<&String> = float
            .iter()
            .copied()
            .filter(|n| mmerge_core::keys::role(n) == l.role)
            .collect();
        assert_eq!(l.stats.tensors, names.len());
        assert_close(
            &l.stats.distances(),
            group(&names),
            &format!("{:?}", l.role),
        );
    }
    assert_eq!(r.skipped.len(), 1);
    assert_eq!(
        (r.skipped[0].name.as_str(), r.skipped[0].dtype),
        ("encoder.layers.0.step", Dtype::I64)
    );

    // The chunk size only changes rounding.
    let big = compare(&a, &b, None, &DistanceOptions::default()).unwrap();
    assert_close(
        &big.aggregate.distances(),
        r.aggregate.distances().0,
        "chunk 65536",
    );
}

#[test]
fn task_vector_mode_equals_weights_on_differences() {
    let tmp = tempfile::tempdir().unwrap();
    let pa = write(&tmp.path().join("a"), &specs(), seeded(1));
    let pb = write(&tmp.path().join("b"), &specs(), seeded(2));
    let pw = write(&tmp.path().join("w"), &specs(), seeded(3));
    let (a, b, w) = (
        Checkpoint::open(&pa).unwrap(),
        Checkpoint::open(&pb).unwrap(),
        Checkpoint::open(&pw).unwrap(),
    );
    // τ = x − w0 in f32, stored as F32 so nothing is rounded again.
    let f32_specs: Vec<Spec> = specs()
        .into_iter()
        .map(|(n, d, s)| (n, if d.is_float() { Dtype::F32 } else { d }, s))
        .collect();
    let tau = |x: &Checkpoint, name: &str| {
        let (v, base) = (x.read_f32(name).unwrap(), w.read_f32(name).unwrap());
        v.iter()
            .zip(&base)
            .map(|(v, w)| v - w)
            .collect::<Vec<f32>>()
    };
    let pta = write(&tmp.path().join("ta"), &f32_specs, |n, _| tau(&a, n));
    let ptb = write(&tmp.path().join("tb"), &f32_specs, |n, _| tau(&b, n));
    let (ta, tb) = (
        Checkpoint::open(&pta).unwrap(),
        Checkpoint::open(&ptb).unwrap(),
    );

    let tv = compare(&a, &b, Some(&w), &opts()).unwrap();
    let wt = compare(&ta, &tb, None, &opts()).unwrap();
    assert_eq!(tv.mode, Mode::TaskVectors);
    assert_eq!(tv.base.as_deref(), Some(pw.as_path()));
    assert_eq!(tv.aggregate, wt.aggregate);
    assert_eq!(tv.layers, wt.layers);
    for (x, y) in tv.tensors.iter().zip(&wt.tensors) {
        assert_eq!(x.distance, y.distance, "{}", x.name);
    }
    let j = tv.to_json();
    assert_eq!(j["mode"], "task_vectors");
    assert_eq!(j["base"], pw.to_string_lossy().as_ref());
}

#[test]
fn mismatches_name_the_key_and_the_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let pa = write(&tmp.path().join("a"), &specs(), seeded(1));
    let a = Checkpoint::open(&pa).unwrap();
    let open_variant = |dir: &str, specs: Vec<Spec>| {
        Checkpoint::open(write(&tmp.path().join(dir), &specs, seeded(2))).unwrap()
    };
    let err_of = |other: &Checkpoint, as_base: bool| {
        let r = if as_base {
            compare(&a, &a, Some(other), &opts())
        } else {
            compare(&a, other, None, &opts())
        };
        r.unwrap_err().to_string()
    };

    let mut s = specs();
    s.retain(|t| t.0 != "head.weight");
    let missing = open_variant("missing", s);
    let err = err_of(&missing, false);
    assert!(
        err.contains("tensor `head.weight` is in") && err.contains("but missing from"),
        "{err}"
    );
    assert!(
        err.ends_with(&format!("missing from {}", missing.path().display())),
        "{err}"
    );
    let err = err_of(&missing, true);
    assert!(
        err.contains("`head.weight`") && err.contains("missing"),
        "base: {err}"
    );

    let mut s = specs();
    s.push(("extra.weight", Dtype::F32, vec![2]));
    let extra = open_variant("extra", s);
    let err = err_of(&extra, false);
    assert!(
        err.contains(&format!("`extra.weight` is in {}", extra.path().display()))
            && err.ends_with(&format!("missing from {}", pa.display())),
        "{err}"
    );

    let mut s = specs();
    s[1].2 = vec![4, 16];
    let shaped = open_variant("shape", s);
    for as_base in [false, true] {
        let err = err_of(&shaped, as_base);
        assert!(
            err.contains("tensor `encoder.layers.0.attn.vision.qkv.weight`: shape [8, 8] in")
                && err.contains(&format!("but [4, 16] in {}", shaped.path().display())),
            "{err}"
        );
    }

    let mut s = specs();
    s[0].1 = Dtype::I32;
    let err = err_of(&open_variant("kind", s), false);
    assert!(
        err.contains("`embeddings.word_embeddings.weight`: dtype F32 in")
            && err.contains("but I32 in"),
        "{err}"
    );

    let bad = DistanceOptions {
        tssd_top_k_percent: 150.0,
        ..opts()
    };
    assert!(
        compare(&a, &a, None, &bad)
            .unwrap_err()
            .to_string()
            .contains("(0, 100]")
    );
}

#[test]
fn json_and_table_follow_the_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let pa = write(&tmp.path().join("a"), &specs(), seeded(1));
    let pb = write(&tmp.path().join("b"), &specs(), seeded(2));
    let (a, b) = (
        Checkpoint::open(&pa).unwrap(),
        Checkpoint::open(&pb).unwrap(),
    );
    let r = compare(&a, &b, None, &opts()).unwrap();
    let j = r.to_json();
    assert_eq!(j["schema"], "mmerge.distance/1");
    assert_eq!(j["a"], pa.to_string_lossy().as_ref());
    assert!(j["base"].is_null());
    assert_eq!(j["mode"], "weights");
    assert_eq!(j["tssd_top_k_percent"], 20.0);
    let metric_keys = [
        "l2",
        "l2_normalized",
        "cosine",
        "sign",
        "soft_sign",
        "truncated_soft_sign",
    ];
    let agg = &j["aggregate"];
    assert_eq!(agg["numel"], 328);
    assert_eq!(agg["tensors"], 7);
    for k in metric_keys {
        assert_eq!(agg[k].as_f64(), r.aggregate.distances().get(k));
    }
    let layers: Vec<&str> = j["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["layer"].as_str().unwrap())
        .collect();
    assert_eq!(layers, ["pre", "0", "1", "post"]);
    let t = &j["tensors"][1];
    assert_eq!(t["name"], "encoder.layers.0.attn.vision.qkv.weight");
    assert_eq!(
        (
            t["layer"].as_str(),
            t["numel"].as_u64(),
            t["tssd_count"].as_u64()
        ),
        (Some("0"), Some(64), Some(13))
    );
    assert_eq!(t["shape"], serde_json::json!([8, 8]));
    for k in metric_keys {
        assert!(t[k].is_f64(), "{k}");
    }
    assert_eq!(
        j["skipped"],
        serde_json::json!([{"name": "encoder.layers.0.step", "dtype": "I64", "shape": [1]}])
    );

    let table = r.to_table();
    let rows: Vec<&str> = table
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(rows, ["pre", "0", "1", "post", "all", "skipped"], "{table}");
    assert!(table.lines().nth(1).unwrap().contains("tssd"), "{table}");
}
