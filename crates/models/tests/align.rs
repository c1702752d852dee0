//! Alignment preserves the multiway transformer's function (`mmerge_merge::align::io`), for
//! every sharing variant at the tiny preset: model mode (checkpoint B permuted into A's basis)
//! computes B's outputs with the residual features permuted, and expert mode (weight matching,
//! and MuDSC-Align with arbitrary activation statistics) computes exactly the input's outputs,
//! on the image-only, text-only (with padding) and fused paths.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

use mmerge_core::Checkpoint;
use mmerge_core::hash::SplitMix64;
use mmerge_merge::align::io::load_weights;
use mmerge_merge::align::{
    AlignMethod, JointStats, Transform, Weights, align_checkpoints, align_experts, expert_units,
    write_joint_stats,
};
use mmerge_models::config::{MultiwayConfig, Sharing};
use mmerge_models::{MultiwayTransformer, TextBatch, io};
use tch::{Device, Kind, Tensor, nn};

fn build(cfg: &MultiwayConfig, seed: i64) -> (nn::VarStore, MultiwayTransformer) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let m = MultiwayTransformer::new(&vs.root(), cfg).unwrap();
    // Every parameter (norms and biases too) randomised, so the experts differ.
    tch::no_grad(|| {
        for (_, mut t) in vs.variables() {
            let noise = Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 0.05;
            let _ = t.f_add_(&noise).unwrap();
        }
    });
    (vs, m)
}

fn loaded(cfg: &MultiwayConfig, dir: &Path) -> MultiwayTransformer {
    let (mut vs, m) = build(cfg, 99);
    io::load(&mut vs, dir).unwrap();
    m
}

/// The three paths' outputs: image only, text only (padded), fused [text; image].
fn outputs(m: &MultiwayTransformer, cfg: &MultiwayConfig) -> [Tensor; 3] {
    tch::manual_seed(7);
    let px = Tensor::randn(
        [2, cfg.num_channels, cfg.image_size, cfg.image_size],
        (Kind::Float, Device::Cpu),
    );
    let ids = Tensor::randint(cfg.vocab_size, [2, 9], (Kind::Int64, Device::Cpu));
    let pos = Tensor::arange(9, (Kind::Int64, Device::Cpu)).unsqueeze(0);
    let mask = pos
        .lt_tensor(&Tensor::from_slice(&[5i64, 9]).unsqueeze(1))
        .to_kind(Kind::Int64);
    let tb = TextBatch {
        ids: &ids,
        mask: &mask,
    };
    tch::no_grad(|| {
        [
            m.encode_image(&px, false).unwrap(),
            m.encode_text(&tb, false).unwrap(),
            m.encode_image_text(&px, &tb, 1, false).unwrap().0,
        ]
    })
}

fn max_abs(x: &Tensor, y: &Tensor) -> f64 {
    assert_eq!(x.size(), y.size());
    (x - y).abs().max().double_value(&[])
}

fn l2(x: &Weights, y: &Weights) -> f64 {
    x.iter()
        .flat_map(|(k, t)| t.data.iter().zip(&y[k].data))
        .map(|(p, q)| f64::from(p - q).powi(2))
        .sum::<f64>()
        .sqrt()
}

fn method(name: &str, lambda: Option<f64>) -> (AlignMethod, mmerge_merge::align::Options) {
    let m = AlignMethod::from_name(name).unwrap();
    (m, m.options(lambda).unwrap())
}

#[test]
fn alignment_preserves_the_function_of_every_sharing_variant() {
    let tmp = tempfile::tempdir().unwrap();
    let mut worst = [0.0f64; 2];
    let mut text_changed = Vec::new();
    for (n, sharing) in Sharing::ALL.into_iter().enumerate() {
        let cfg = MultiwayConfig::preset("tiny", sharing).unwrap();
        let dir = tmp.path().join(sharing.name());
        let (a_dir, b_dir) = (dir.join("a"), dir.join("b"));
        let (vs_a, m_a) = build(&cfg, 10 + n as i64);
        let (vs_b, m_b) = build(&cfg, 20 + n as i64);
        io::save(&vs_a, &a_dir, Some(&cfg.to_json()), false).unwrap();
        io::save(&vs_b, &b_dir, Some(&cfg.to_json()), false).unwrap();

        // (a) Model mode: B permuted into A's basis computes B's outputs, residual permuted.
        let out = dir.join("model");
        let (m, o) = method("weight_matching", None);
        let s = align_checkpoints(&a_dir, &b_dir, &out, false, m, &o, None).unwrap();
        let Transform::Perm(residual) = &s.transforms["residual"] else {
            panic!("residual unit")
        };
        let sigma = Tensor::from_slice(&residual.iter().map(|&i| i as i64).collect::<Vec<_>>());
        let aligned = loaded(&cfg, &out);
        for (x, y) in outputs(&aligned, &cfg).iter().zip(outputs(&m_b, &cfg)) {
            let d = max_abs(x, &y.index_select(-1, &sigma));
            assert!(d < 1e-5, "{sharing:?} model mode: {d}");
            worst[0] = worst[0].max(d);
        }
        let w = |d: &Path| load_weights(&Checkpoint::open(d).unwrap()).unwrap();
        let (wa, wb, wo) = (w(&a_dir), w(&b_dir), w(&out));
        assert!(
            s.tensors_changed > 0 && wo != wb,
            "{sharing:?}: nothing moved"
        );
        let (before, after) = (l2(&wa, &wb), l2(&wa, &wo));
        assert!(after < before, "{sharing:?}: ‖A − B‖ {before} → {after}");
        eprintln!(
            "{sharing:?} model: {} units, mean sim {:.4}, ‖A − B‖ {before:.3} → {after:.3}",
            s.units,
            s.mean_similarity.unwrap()
        );

        // (b) Expert mode: the output computes exactly what A does, whatever the statistics.
        let stored = |e: &str| wa.keys().any(|k| k.contains(&format!(".{e}.")));
        let others: Vec<&str> = ["text", "vl"].into_iter().filter(|e| stored(e)).collect();
        if sharing == Sharing::Shared {
            let e = align_experts(&a_dir, &out, true, "vision", &["text"], m, &o, None)
                .unwrap_err()
                .to_string();
            assert_eq!(
                e,
                "expert `vision`: not stored in this checkpoint (stored: shared)"
            );
            continue;
        }
        let keys: Vec<(String, Vec<usize>)> = wa
            .iter()
            .map(|(k, t)| (k.clone(), t.shape.clone()))
            .collect();
        let mut stats = BTreeMap::new();
        let mut rng = SplitMix64::new(n as u64);
        for other in &others {
            let heads = cfg.num_attention_heads as usize;
            for u in expert_units(&keys, heads, "vision", other).unwrap() {
                let mut st = JointStats::new(u.width);
                for _ in 0..16 {
                    let f: Vec<f64> = (0..2 * u.width)
                        .map(|_| f64::from(rng.signed_unit_f32()))
                        .collect();
                    st.push(&f[..u.width], &f[u.width..]).unwrap();
                }
                stats.insert(u.name, st);
            }
        }
        let stats_dir = dir.join("statistics");
        write_joint_stats(&stats_dir, &stats).unwrap();
        let reference = outputs(&m_a, &cfg);
        for (name, lambda) in [
            ("weight_matching", None),
            ("activation_matching", None),
            ("mudsc_align", Some(0.5)),
        ] {
            let out = dir.join(name);
            let (m, o) = method(name, lambda);
            let s = align_experts(
                &a_dir,
                &out,
                false,
                "vision",
                &others,
                m,
                &o,
                Some(&stats_dir),
            )
            .unwrap();
            for (x, y) in outputs(&loaded(&cfg, &out), &cfg).iter().zip(&reference) {
                let d = max_abs(x, y);
                assert!(d < 1e-5, "{sharing:?} {name}: {d}");
                worst[1] = worst[1].max(d);
            }
            let wo = w(&out);
            let moved: Vec<&String> = wo
                .keys()
                .filter(|k| k.contains(".text.") && wo[*k] != wa[*k])
                .collect();
            assert!(
                wo.iter()
                    .filter(|(k, _)| !k.contains(".text.") && !k.contains(".vl."))
                    .all(|(k, t)| *t == wa[k]),
                "{sharing:?} {name}: only other experts change"
            );
            eprintln!(
                "{sharing:?} {name}: {} units, {} tensors changed ({} text), mean sim {:?}",
                s.units,
                s.tensors_changed,
                moved.len(),
                s.mean_similarity
            );
            if !moved.is_empty() {
                text_changed.push((sharing, name));
            }
        }
    }
    eprintln!(
        "max deviation: model mode {:.2e}, expert mode {:.2e}",
        worst[0], worst[1]
    );
    // Attention or FFN experts are aligned where they are stored (not with custom_ln).
    for sharing in [
        Sharing::AllSpecific,
        Sharing::CustomAttn,
        Sharing::CustomFfn,
    ] {
        for name in ["weight_matching", "mudsc_align"] {
            assert!(
                text_changed.contains(&(sharing, name)),
                "{sharing:?} {name}"
            );
        }
    }
}
