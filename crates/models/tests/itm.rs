//! ITM with hard negatives: the sampler never draws a positive or a shared caption, draws the
//! only candidate when there is one, matches the softmax over the non-positives (computed
//! independently with libtorch in float64) within 4 binomial σ, is a pure function of
//! (similarities, seed, step); the loss on hand-worked logits; the fused 3B batch against each
//! pair run on its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mmerge_models::config::{MultiwayConfig, Sharing};
use mmerge_models::heads::Classifier;
use mmerge_models::itm::{
    ItmError, Side, itm_labels, itm_logits, itm_loss, itm_pairs, mine_hard_negatives,
};
use mmerge_models::{MultiwayTransformer, TextBatch};
use tch::{Device, Kind, Tensor, nn};

const B: usize = 5;

/// Image 0 and image 3 share captions: texts 0 and 3 are positives of both.
fn shared_mask() -> Vec<Vec<bool>> {
    let mut m = vec![vec![false; B]; B];
    for (i, row) in m.iter_mut().enumerate() {
        row[i] = true;
    }
    m[0][3] = true;
    m[3][0] = true;
    m
}

fn sims() -> Tensor {
    let v: Vec<f32> = (0..B * B)
        .map(|k| ((k * 7 % 11) as f32 - 5.0) * 0.4)
        .collect();
    Tensor::from_slice(&v).view([B as i64, B as i64])
}

#[test]
fn positives_and_shared_captions_are_never_drawn() {
    let sim = sims();
    let mask = shared_mask();
    for step in 0..10_000 {
        let (t, i) = mine_hard_negatives(&sim, &mask, 7, step).unwrap();
        for r in 0..B {
            assert!(
                !mask[r][t[r] as usize],
                "step {step}: image {r} got text {}",
                t[r]
            );
            assert!(
                !mask[i[r] as usize][r],
                "step {step}: text {r} got image {}",
                i[r]
            );
        }
    }
}

#[test]
fn the_diagonal_is_a_positive_whatever_the_mask_says() {
    // A big similarity on the diagonal would win almost every draw if it were a candidate.
    let sim = Tensor::eye(3, (Kind::Float, Device::Cpu)) * 50.0;
    let mask = vec![vec![false; 3]; 3];
    for step in 0..1000 {
        let (t, i) = mine_hard_negatives(&sim, &mask, 1, step).unwrap();
        for r in 0..3 {
            assert_ne!(t[r], r as i64);
            assert_ne!(i[r], r as i64);
        }
    }
}

#[test]
fn the_only_non_positive_is_always_drawn() {
    // Image 0: texts 0, 1 positive → only text 2. Text 0: images 0, 1 positive → only image 2.
    let mut mask = vec![vec![false; 3]; 3];
    for (i, row) in mask.iter_mut().enumerate() {
        row[i] = true;
    }
    mask[0][1] = true;
    mask[1][0] = true;
    // Text 2 strongly prefers image 0 (a candidate), image 0 strongly dislikes text 2.
    let sim = Tensor::from_slice(&[0.0f32, 9.0, -30.0, 9.0, 0.0, 1.0, 5.0, 1.0, 0.0]).view([3, 3]);
    for step in 0..1000 {
        let (t, i) = mine_hard_negatives(&sim, &mask, 3, step).unwrap();
        assert_eq!(t[0], 2);
        assert_eq!(t[1], 2);
        assert_eq!(i[0], 2);
        assert_eq!(i[1], 2);
    }
}

#[test]
fn draws_follow_the_softmax_over_the_non_positives() {
    let sim = sims();
    let mask = shared_mask();
    let n = 20_000u64;
    let mut rows = vec![vec![0u64; B]; B]; // [image][text drawn]
    let mut cols = vec![vec![0u64; B]; B]; // [text][image drawn]
    for step in 0..n {
        let (t, i) = mine_hard_negatives(&sim, &mask, 11, step).unwrap();
        for r in 0..B {
            rows[r][t[r] as usize] += 1;
            cols[r][i[r] as usize] += 1;
        }
    }
    // The oracle: libtorch's float64 softmax with the positives at −∞.
    let pos: Vec<bool> = mask.iter().flatten().copied().collect();
    let pos = Tensor::from_slice(&pos).view([B as i64, B as i64]);
    let masked = sim
        .to_kind(Kind::Double)
        .masked_fill(&pos, f64::NEG_INFINITY);
    let p_rows = Vec::<f64>::try_from(masked.softmax(1, Kind::Double).view([-1])).unwrap();
    let p_cols = Vec::<f64>::try_from(masked.softmax(0, Kind::Double).view([-1])).unwrap();
    let mut worst = 0.0f64;
    for a in 0..B {
        for c in 0..B {
            // rows: image a, text c; cols: text a, image c (p_cols is indexed [image, text]).
            for (count, p) in [
                (rows[a][c], p_rows[a * B + c]),
                (cols[a][c], p_cols[c * B + a]),
            ] {
                let sd = (n as f64 * p * (1.0 - p)).sqrt();
                let z = if sd > 0.0 {
                    (count as f64 - n as f64 * p).abs() / sd
                } else {
                    assert_eq!(count, 0, "a zero-probability cell was drawn");
                    0.0
                };
                assert!(
                    z <= 4.0,
                    "image/text {a}, candidate {c}: {count} draws, p = {p}, z = {z}"
                );
                worst = worst.max(z);
            }
        }
    }
    eprintln!("largest |z| over all cells: {worst:.2}");
}

#[test]
fn same_seed_and_step_give_the_same_draws() {
    let sim = Tensor::randn([8, 8], (Kind::Float, Device::Cpu));
    let mask: Vec<Vec<bool>> = (0..8).map(|i| (0..8).map(|j| i == j).collect()).collect();
    tch::manual_seed(1);
    let a = mine_hard_negatives(&sim, &mask, 42, 5).unwrap();
    tch::manual_seed(2); // libtorch's generator plays no part
    let b = mine_hard_negatives(&sim, &mask, 42, 5).unwrap();
    assert_eq!(a, b);
    let c = mine_hard_negatives(&sim, &mask, 42, 6).unwrap();
    assert_ne!(a, c);
    let d = mine_hard_negatives(&sim, &mask, 43, 5).unwrap();
    assert_ne!(a, d);
    // Float64 similarities of the same values draw the same.
    let e = mine_hard_negatives(&sim.to_kind(Kind::Double), &mask, 42, 5).unwrap();
    assert_eq!(a, e);
}

fn no_negative(err: &ItmError) -> Option<(Side, usize)> {
    match err {
        ItmError::NoNegative { side, index } => Some((*side, *index)),
        _ => None,
    }
}

#[test]
fn a_row_without_negatives_is_named() {
    let sim = Tensor::zeros([2, 2], (Kind::Float, Device::Cpu));
    let mask = vec![vec![true, false], vec![true, true]];
    let err = mine_hard_negatives(&sim, &mask, 0, 0).unwrap_err();
    assert_eq!(no_negative(&err), Some((Side::Image, 1)), "{err}");
    assert!(err.to_string().contains("image 1"), "{err}");
    // Column-wise: text 0 is a positive of every image, though every image has a negative.
    let sim3 = Tensor::zeros([3, 3], (Kind::Float, Device::Cpu));
    let col = vec![
        vec![true, false, false],
        vec![true, true, false],
        vec![true, false, true],
    ];
    let err = mine_hard_negatives(&sim3, &col, 0, 0).unwrap_err();
    assert_eq!(no_negative(&err), Some((Side::Text, 0)), "{err}");
    assert!(err.to_string().contains("text 0"), "{err}");
    let err = mine_hard_negatives(
        &Tensor::zeros([2, 3], (Kind::Float, Device::Cpu)),
        &mask,
        0,
        0,
    )
    .unwrap_err();
    assert!(matches!(err, ItmError::Shape(_)), "{err}");
    let nan = Tensor::from_slice(&[0.0f32, f32::NAN, 0.0, 0.0]).view([2, 2]);
    let err = mine_hard_negatives(&nan, &[vec![true, false], vec![false, true]], 0, 0).unwrap_err();
    assert!(
        matches!(err, ItmError::NotFinite { row: 0, col: 1, .. }),
        "{err}"
    );
}

#[test]
fn pairs_and_labels_are_positives_then_negatives() {
    let (images, texts) = itm_pairs(&[2, 0, 1], &[1, 2, 0]);
    assert_eq!(images, vec![0, 1, 2, 0, 1, 2, 1, 2, 0]);
    assert_eq!(texts, vec![0, 1, 2, 2, 0, 1, 0, 1, 2]);
    let labels = Vec::<i64>::try_from(itm_labels(3, Device::Cpu)).unwrap();
    assert_eq!(labels, vec![1, 1, 1, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn loss_on_hand_worked_logits() {
    // Equal logits: every row is a coin flip, loss ln 2.
    for v in [0.0, 0.7, -3.0] {
        let l = itm_loss(&Tensor::full([9, 2], v, (Kind::Float, Device::Cpu)))
            .unwrap()
            .double_value(&[]);
        assert!((l - 2f64.ln()).abs() < 1e-6, "{l}");
    }
    // B = 1: the positive row [0, 3] (label 1), negatives [1, 0] and [0, 2] (label 0):
    // CE = ln(1 + e^(other − own)).
    let logits = Tensor::from_slice(&[0.0f32, 3.0, 1.0, 0.0, 0.0, 2.0]).view([3, 2]);
    let want =
        ((1.0 + (-3f64).exp()).ln() + (1.0 + (-1f64).exp()).ln() + (1.0 + 2f64.exp()).ln()) / 3.0;
    let got = itm_loss(&logits).unwrap().double_value(&[]);
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    assert!(matches!(
        itm_loss(&Tensor::zeros([4, 2], (Kind::Float, Device::Cpu))),
        Err(ItmError::Shape(_))
    ));
}

#[test]
fn fused_batch_rows_match_each_pair_run_alone() {
    tch::manual_seed(0);
    let cfg = MultiwayConfig::preset("tiny", Sharing::AllSpecific).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let m = MultiwayTransformer::new(&vs.root(), &cfg).unwrap();
    let head = Classifier::new(
        &(vs.root() / "heads" / "itm"),
        cfg.hidden_size,
        2,
        cfg.layer_norm_eps,
    );
    let b = 3;
    let px = Tensor::randn(
        [b, 3, cfg.image_size, cfg.image_size],
        (Kind::Float, Device::Cpu),
    );
    let ids = Tensor::randint(cfg.vocab_size, [b, 6], (Kind::Int64, Device::Cpu));
    let mask =
        Tensor::from_slice(&[1i64, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 0]).view([b, 6]);
    let text = TextBatch {
        ids: &ids,
        mask: &mask,
    };
    let (tfi, ift) = (vec![2i64, 0, 1], vec![1i64, 2, 0]);
    let logits = itm_logits(&m, &head, &px, &text, &tfi, &ift, false).unwrap();
    assert_eq!(logits.size(), vec![3 * b, 2]);
    let (images, texts) = itm_pairs(&tfi, &ift);
    for r in 0..(3 * b) as usize {
        let (im, tx) = (images[r], texts[r]);
        let one = TextBatch {
            ids: &ids.narrow(0, tx, 1),
            mask: &mask.narrow(0, tx, 1),
        };
        let (h, _) = m
            .encode_image_text(&px.narrow(0, im, 1), &one, 1, false)
            .unwrap();
        let want = head.forward(&h.select(1, 0));
        assert!(
            logits
                .narrow(0, r as i64, 1)
                .allclose(&want, 1e-4, 1e-5, false),
            "row {r}"
        );
    }
    let bad = itm_logits(&m, &head, &px, &text, &[3, 0, 1], &ift, false).unwrap_err();
    assert!(matches!(bad, ItmError::Shape(_)), "{bad}");
    // The loss backpropagates to the head and the encoder.
    itm_loss(&logits).unwrap().backward();
    let grads = vs
        .trainable_variables()
        .iter()
        .filter(|v| v.grad().defined() && v.grad().abs().sum(Kind::Double).double_value(&[]) > 0.0)
        .count();
    assert!(grads > vs.trainable_variables().len() / 2, "{grads}");
}
