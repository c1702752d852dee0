//! The multiway transformer: parameter counts against the closed formula, save/load round
//! trips, strict loading, masks, modality separation below the VL layers, and the
//! expert-to-shared merge reproducing the vision path.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mmerge_models::config::{MultiwayConfig, Sharing};
use mmerge_models::{ConfigError, ModelError, MultiwayTransformer, TextBatch, io, parameter_count};
use tch::{Device, Kind, Tensor, nn};

const ALL: [Sharing; 5] = [
    Sharing::AllSpecific,
    Sharing::CustomAttn,
    Sharing::CustomFfn,
    Sharing::CustomLn,
    Sharing::Shared,
];

fn build(cfg: &MultiwayConfig, seed: i64) -> (nn::VarStore, MultiwayTransformer) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let m = MultiwayTransformer::new(&vs.root(), cfg).unwrap();
    // Randomise the layer norms and biases too, so tests see every parameter's effect.
    tch::no_grad(|| {
        for (_, mut t) in vs.variables() {
            let noise = Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 0.05;
            let _ = t.f_add_(&noise).unwrap();
        }
    });
    (vs, m)
}

fn pixels(cfg: &MultiwayConfig, b: i64, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    Tensor::randn(
        [b, cfg.num_channels, cfg.image_size, cfg.image_size],
        (Kind::Float, Device::Cpu),
    )
}

fn text(cfg: &MultiwayConfig, lens: &[i64], t: i64, seed: i64) -> (Tensor, Tensor) {
    tch::manual_seed(seed);
    let b = lens.len() as i64;
    let ids = Tensor::randint(cfg.vocab_size, [b, t], (Kind::Int64, Device::Cpu));
    let pos = Tensor::arange(t, (Kind::Int64, Device::Cpu)).unsqueeze(0);
    let lens = Tensor::from_slice(lens).unsqueeze(1);
    let mask = pos.lt_tensor(&lens).to_kind(Kind::Int64);
    (ids, mask)
}

#[test]
fn parameter_counts_match_the_closed_formula() {
    for preset in ["tiny", "small", "medium"] {
        for sharing in ALL {
            for layer_scale in [None, Some(0.1)] {
                let mut cfg = MultiwayConfig::preset(preset, sharing).unwrap();
                cfg.layer_scale_init = layer_scale;
                let vs = nn::VarStore::new(Device::Cpu);
                let _m = MultiwayTransformer::new(&vs.root(), &cfg).unwrap();
                let n: i64 = vs
                    .variables()
                    .values()
                    .map(Tensor::numel)
                    .map(|n| n as i64)
                    .sum();
                assert_eq!(
                    n,
                    parameter_count(&cfg),
                    "{preset} {sharing:?} {layer_scale:?}"
                );
            }
        }
    }
    // The small preset, worked by hand: blocks 4 × 49,984 (shared) or 2 × 2 + 2 × 3 expert
    // copies of 49,984 (all specific), embeddings 78,848, final norm 128.
    let shared = parameter_count(&MultiwayConfig::preset("small", Sharing::Shared).unwrap());
    let multi = parameter_count(&MultiwayConfig::preset("small", Sharing::AllSpecific).unwrap());
    assert_eq!(shared, 4 * 49_984 + 78_848 + 128);
    assert_eq!(multi, 10 * 49_984 + 78_848 + 128);
}

#[test]
fn save_load_round_trip_gives_identical_outputs() {
    let cfg = MultiwayConfig::preset("tiny", Sharing::AllSpecific).unwrap();
    let (vs, m) = build(&cfg, 1);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ck");
    io::save(&vs, &dir, Some(&cfg.to_json()), false).unwrap();
    let cfg2 = MultiwayConfig::from_file(&dir.join("config.json")).unwrap();
    assert_eq!(cfg2, cfg);
    let (mut vs2, m2) = build(&cfg2, 2);
    io::load(&mut vs2, &dir).unwrap();
    let px = pixels(&cfg, 2, 3);
    let (ids, mask) = text(&cfg, &[5, 9], 9, 4);
    let tb = TextBatch {
        ids: &ids,
        mask: &mask,
    };
    let a = m.encode_image_text(&px, &tb, 1, false).unwrap().0;
    let b = m2.encode_image_text(&px, &tb, 1, false).unwrap().0;
    assert!(a.equal(&b));
    assert!(
        m.encode_text(&tb, false)
            .unwrap()
            .equal(&m2.encode_text(&tb, false).unwrap())
    );
}

#[test]
fn loading_a_wrong_checkpoint_lists_every_bad_key() {
    let tiny = MultiwayConfig::preset("tiny", Sharing::Shared).unwrap();
    let (vs, _m) = build(&tiny, 1);
    let tmp = tempfile::tempdir().unwrap();
    io::save(&vs, &tmp.path().join("shared"), None, false).unwrap();
    // Into a custom-FFN model: FFN experts are missing, the shared FFN is unexpected.
    let (mut vs2, _m2) = build(
        &MultiwayConfig::preset("tiny", Sharing::CustomFfn).unwrap(),
        2,
    );
    let err = io::load(&mut vs2, &tmp.path().join("shared"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing keys") && err.contains("encoder.layers.0.ffn.vision.fc1.weight"),
        "{err}"
    );
    assert!(
        err.contains("unexpected keys") && err.contains("encoder.layers.0.ffn.shared.fc1.weight"),
        "{err}"
    );
    // A wider model: every matrix is mis-shaped, and the message gives both shapes.
    let mut wide = tiny.clone();
    wide.hidden_size = 48;
    let (mut vs3, _m3) = build(&wide, 3);
    let err = io::load(&mut vs3, &tmp.path().join("shared"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`embeddings.cls_token`: expected shape [1, 1, 48], found [1, 1, 32]"),
        "{err}"
    );
}

#[test]
fn config_with_an_unknown_field_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(
        &MultiwayConfig::preset("tiny", Sharing::Shared)
            .unwrap()
            .to_json(),
    )
    .unwrap();
    v["hiden_size"] = 3.into();
    std::fs::write(&p, v.to_string()).unwrap();
    let err = MultiwayConfig::from_file(&p).unwrap_err().to_string();
    assert!(err.contains("unknown field `hiden_size`"), "{err}");
    v.as_object_mut().unwrap().remove("hiden_size");
    v["num_attention_heads"] = 3.into();
    std::fs::write(&p, v.to_string()).unwrap();
    let err = MultiwayConfig::from_file(&p).unwrap_err();
    assert!(
        matches!(
            &err,
            ModelError::InvalidConfig {
                path: Some(path),
                error: ConfigError::NotDivisible {
                    field: "hidden_size",
                    value: 32,
                    by: "num_attention_heads",
                    divisor: 3
                }
            } if path == &p
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "{}: `hidden_size` 32 is not divisible by `num_attention_heads` 3",
            p.display()
        )
    );
}

#[test]
fn validate_names_the_field_and_why() {
    let ok = MultiwayConfig::preset("tiny", Sharing::Shared).unwrap();
    assert_eq!(ok.validate(), Ok(()));
    let cases: [(MultiwayConfig, ConfigError); 7] = [
        (
            MultiwayConfig {
                num_hidden_layers: 0,
                ..ok.clone()
            },
            ConfigError::NotPositive {
                field: "num_hidden_layers",
                value: 0,
            },
        ),
        (
            MultiwayConfig {
                vocab_size: -1,
                ..ok.clone()
            },
            ConfigError::Negative {
                field: "vocab_size",
                value: -1,
            },
        ),
        (
            MultiwayConfig {
                vocab_size: 0,
                image_size: 0,
                ..ok.clone()
            },
            ConfigError::NoInput,
        ),
        (
            MultiwayConfig {
                image_size: 30,
                ..ok.clone()
            },
            ConfigError::NotDivisible {
                field: "image_size",
                value: 30,
                by: "patch_size",
                divisor: ok.patch_size,
            },
        ),
        (
            MultiwayConfig {
                vl_layers: ok.num_hidden_layers + 1,
                ..ok.clone()
            },
            ConfigError::VlLayers {
                vl_layers: ok.num_hidden_layers + 1,
                layers: ok.num_hidden_layers,
            },
        ),
        (
            MultiwayConfig {
                attention_probs_dropout_prob: 1.0,
                ..ok.clone()
            },
            ConfigError::NotAProbability {
                field: "attention_probs_dropout_prob",
                value: 1.0,
            },
        ),
        (
            MultiwayConfig {
                layer_norm_eps: 0.0,
                ..ok.clone()
            },
            ConfigError::LayerNormEps(0.0),
        ),
    ];
    for (cfg, want) in cases {
        assert_eq!(cfg.validate(), Err(want.clone()));
        // A model is not built from it either.
        let vs = nn::VarStore::new(Device::Cpu);
        let err = MultiwayTransformer::new(&vs.root(), &cfg).unwrap_err();
        assert!(
            matches!(&err, ModelError::InvalidConfig { path: None, error } if *error == want),
            "{err:?}"
        );
    }
}

#[test]
fn padding_never_changes_real_tokens() {
    for sharing in [Sharing::AllSpecific, Sharing::Shared] {
        let cfg = MultiwayConfig::preset("tiny", sharing).unwrap();
        let (_vs, m) = build(&cfg, 5);
        let (ids, mask) = text(&cfg, &[4, 7], 10, 6);
        let tb = TextBatch {
            ids: &ids,
            mask: &mask,
        };
        let a = m.encode_text(&tb, false).unwrap();
        // Different content in the padded positions, and a shorter padded length.
        let ids2 = ids.where_self(&mask.ne(0), &ids.ones_like());
        let b = m
            .encode_text(
                &TextBatch {
                    ids: &ids2,
                    mask: &mask,
                },
                false,
            )
            .unwrap();
        let short_ids = ids.narrow(1, 0, 7);
        let short_mask = mask.narrow(1, 0, 7);
        let c = m
            .encode_text(
                &TextBatch {
                    ids: &short_ids,
                    mask: &short_mask,
                },
                false,
            )
            .unwrap();
        for (row, len) in [(0i64, 4i64), (1, 7)] {
            let real = |x: &Tensor| x.get(row).narrow(0, 0, len);
            // float32 reductions over other lengths may differ in the last bits; a padded
            // token leaking in would move outputs by orders of magnitude more.
            assert!(
                real(&a).allclose(&real(&b), 1e-5, 1e-5, false),
                "{sharing:?} row {row}"
            );
            assert!(
                real(&a).allclose(&real(&c), 1e-5, 1e-5, false),
                "{sharing:?} row {row} short"
            );
        }
        // The same holds through the fused path, for text and image tokens.
        let px = pixels(&cfg, 2, 7);
        let (fa, _) = m.encode_image_text(&px, &tb, 1, false).unwrap();
        let (fb, _) = m
            .encode_image_text(
                &px,
                &TextBatch {
                    ids: &ids2,
                    mask: &mask,
                },
                1,
                false,
            )
            .unwrap();
        let n_img = cfg.num_patches() + 1;
        let img = |x: &Tensor| x.narrow(1, 10, n_img);
        assert!(img(&fa).allclose(&img(&fb), 1e-5, 1e-5, false));
    }
}

#[test]
fn no_cross_modal_attention_below_the_vl_layers() {
    let mut cfg = MultiwayConfig::preset("tiny", Sharing::AllSpecific).unwrap();
    cfg.vl_layers = 0;
    let (_vs, m) = build(&cfg, 8);
    let px = pixels(&cfg, 2, 9);
    let (ids, mask) = text(&cfg, &[3, 8], 8, 10);
    let tb = TextBatch {
        ids: &ids,
        mask: &mask,
    };
    let (fused, _) = m.encode_image_text(&px, &tb, 1, false).unwrap();
    // With no VL layer, the fused sequence is exactly the two unimodal encodings side by side.
    assert!(
        fused
            .narrow(1, 0, 8)
            .allclose(&m.encode_text(&tb, false).unwrap(), 1e-5, 1e-5, false)
    );
    assert!(fused.narrow(1, 8, cfg.num_patches() + 1).allclose(
        &m.encode_image(&px, false).unwrap(),
        1e-5,
        1e-5,
        false
    ));
    // With a VL layer, changing the text changes the image tokens: the modalities meet there.
    let cfg1 = MultiwayConfig {
        vl_layers: 1,
        ..cfg
    };
    let (_vs1, m1) = build(&cfg1, 8);
    let (ids2, _) = text(&cfg1, &[3, 8], 8, 11);
    let a = m1
        .encode_image_text(&px, &tb, 1, false)
        .unwrap()
        .0
        .narrow(1, 8, 1);
    let b = m1
        .encode_image_text(
            &px,
            &TextBatch {
                ids: &ids2,
                mask: &mask,
            },
            1,
            false,
        )
        .unwrap()
        .0
        .narrow(1, 8, 1);
    assert!(!a.allclose(&b, 1e-4, 1e-4, false));
    // And the pair path gives [B, 2D].
    assert_eq!(
        m1.encode_pair(&px, &px.flip([3]), &tb, false)
            .unwrap()
            .size(),
        [2, 2 * cfg1.hidden_size]
    );
}

#[test]
fn bad_inputs_are_refused() {
    let cfg = MultiwayConfig::preset("tiny", Sharing::Shared).unwrap();
    let (_vs, m) = build(&cfg, 1);
    let bad = Tensor::zeros([1, 3, 16, 16], (Kind::Float, Device::Cpu));
    assert!(
        m.encode_image(&bad, false)
            .unwrap_err()
            .to_string()
            .contains("pixels must be [B, 3, 32, 32]")
    );
    let ids = Tensor::from_slice(&[1i64, 9999]).unsqueeze(0);
    let mask = ids.ones_like();
    let err = m
        .encode_text(
            &TextBatch {
                ids: &ids,
                mask: &mask,
            },
            false,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("token ids must be in [0, 512)"), "{err}");
}

#[test]
fn vision_expert_merged_with_weight_one_reproduces_the_vision_path() {
    use mmerge_merge::experts::{self, ExpertOptions};
    let cfg = MultiwayConfig::preset("tiny", Sharing::AllSpecific).unwrap();
    let (vs, m) = build(&cfg, 12);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("multiway");
    io::save(&vs, &src, None, false).unwrap();
    let ck = mmerge_core::Checkpoint::open(&src).unwrap();
    let opts = ExpertOptions {
        weights: ["vision", "text", "vl"]
            .into_iter()
            .zip([1.0, 0.0, 0.0])
            .map(|(e, w)| (e.into(), w))
            .collect(),
        ..Default::default()
    };
    let plan = experts::plan(ck, mmerge_merge::MethodKind::Linear, opts).unwrap();
    let mut opts = mmerge_merge::MergeOptions::new(tmp.path().join("shared"));
    opts.copy_tokenizer = false;
    mmerge_merge::run(&plan, "", &opts, &indicatif::ProgressBar::hidden()).unwrap();
    let shared_cfg = MultiwayConfig {
        sharing: Sharing::Shared,
        ..cfg.clone()
    };
    let (mut vs2, m2) = build(&shared_cfg, 13);
    io::load(&mut vs2, &tmp.path().join("shared")).unwrap();
    let px = pixels(&cfg, 3, 14);
    assert!(
        m.encode_image(&px, false)
            .unwrap()
            .equal(&m2.encode_image(&px, false).unwrap())
    );
}

#[test]
fn experts_merged_by_ties_and_linear_load_strictly_into_the_shared_model() {
    use mmerge_merge::MethodKind;
    use mmerge_merge::experts::{self, ExpertOptions};
    use mmerge_merge::params::{ParamMap, ParamValue};
    let cfg = MultiwayConfig::preset("tiny", Sharing::AllSpecific).unwrap();
    let shared_cfg = MultiwayConfig {
        sharing: Sharing::Shared,
        ..cfg.clone()
    };
    let tmp = tempfile::tempdir().unwrap();
    let (vs, _) = build(&cfg, 21);
    io::save(&vs, &tmp.path().join("multiway"), None, false).unwrap();
    // W0: the seed model, fully shared; its keys are the output keys.
    let (w0, _) = build(&shared_cfg, 22);
    io::save(&w0, &tmp.path().join("w0"), None, false).unwrap();
    let open = |name: &str| mmerge_core::Checkpoint::open(tmp.path().join(name)).unwrap();
    for (method, base, params) in [
        (MethodKind::Linear, None, ParamMap::new()),
        (
            MethodKind::Ties,
            Some(open("w0")),
            ParamMap::from([("density".to_string(), ParamValue::Number(0.5))]),
        ),
    ] {
        let opts = ExpertOptions {
            params,
            base,
            ..Default::default()
        };
        let plan = experts::plan(open("multiway"), method, opts).unwrap();
        let out = tmp.path().join(method.name());
        let mut run = mmerge_merge::MergeOptions::new(&out);
        run.copy_tokenizer = false;
        mmerge_merge::run(&plan, "", &run, &indicatif::ProgressBar::hidden()).unwrap();
        let (mut vs2, m2) = build(&shared_cfg, 23);
        io::load(&mut vs2, &out).unwrap_or_else(|e| panic!("{}: {e}", method.name()));
        // Every loaded parameter is the merged one (not the random init it replaced).
        let merged = mmerge_core::Checkpoint::open(&out).unwrap();
        for (name, t) in vs2.variables() {
            let want = merged.read_f32(&name).unwrap();
            assert_eq!(
                Vec::<f32>::try_from(&t.flatten(0, -1)).unwrap(),
                want,
                "{name}"
            );
        }
        assert_eq!(vs2.variables().len(), merged.len());
        let px = pixels(&cfg, 2, 24);
        assert!(
            m2.encode_image(&px, false)
                .unwrap()
                .isfinite()
                .all()
                .int64_value(&[])
                == 1
        );
    }
}
