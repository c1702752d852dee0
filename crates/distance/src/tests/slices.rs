use proptest::prelude::*;

use super::assert_close;
use crate::distance::DistanceOptions;
use crate::oracle;
use crate::stream::slice_distance;

fn opts(k: f64, chunk_len: usize) -> DistanceOptions {
    DistanceOptions {
        tssd_top_k_percent: k,
        chunk_len,
    }
}

fn distances(a: &[f32], b: &[f32], k: f64, chunk: usize) -> crate::Distances {
    slice_distance(a, b, None, &opts(k, chunk))
        .unwrap()
        .distances()
}

const A: [f32; 7] = [0.5, -1.25, 3.0, 1e-3, -7.5, 0.75, 2.0];

#[test]
fn sign_of_a_vs_minus_a_and_2a() {
    let neg: Vec<f32> = A.iter().map(|x| -x).collect();
    let dbl: Vec<f32> = A.iter().map(|x| 2.0 * x).collect();
    assert_eq!(distances(&A, &neg, 20.0, 3)["sign"], 1.0);
    assert_eq!(distances(&A, &dbl, 20.0, 3)["sign"], 0.0);
}

#[test]
fn cosine_and_ssd_of_scaled_and_negated() {
    let neg: Vec<f32> = A.iter().map(|x| -x).collect();
    let dbl: Vec<f32> = A.iter().map(|x| 2.0 * x).collect();
    let m = distances(&A, &dbl, 20.0, 2);
    assert!(m["cosine"].abs() < 1e-12, "{}", m["cosine"]);
    assert_eq!((m["soft_sign"], m["truncated_soft_sign"]), (0.0, 0.0));
    let m = distances(&A, &neg, 20.0, 2);
    assert!((m["cosine"] - 2.0).abs() < 1e-12, "{}", m["cosine"]);
    assert_eq!((m["soft_sign"], m["truncated_soft_sign"]), (1.0, 1.0));
}

#[test]
fn l2_of_identical_inputs_is_zero() {
    let m = distances(&A, &A, 20.0, 4);
    assert_eq!(
        (
            m["l2"],
            m["l2_normalized"],
            m["sign"],
            m["soft_sign"],
            m["cosine"]
        ),
        (0.0, 0.0, 0.0, 0.0, 0.0)
    );
    // ‖(3,4) − 0‖ = 5, / sqrt(2).
    let m = distances(&[3.0, 4.0], &[0.0, 0.0], 20.0, 1);
    assert_eq!(m["l2"], 5.0);
    assert!((m["l2_normalized"] - 5.0 / 2f64.sqrt()).abs() < 1e-15);
    assert_eq!((m["cosine"], m["sign"], m["soft_sign"]), (1.0, 1.0, 0.0));
}

#[test]
fn tssd_at_100_percent_is_ssd_bit_for_bit() {
    let a: Vec<f32> = (0..1000)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013)
        .collect();
    let b: Vec<f32> = (0..1000)
        .map(|i| ((i * 53 % 89) as f32 - 44.0) * 0.021)
        .collect();
    for chunk in [1, 7, 64, 1000, 1 << 16] {
        let m = distances(&a, &b, 100.0, chunk);
        assert_eq!(
            m["truncated_soft_sign"].to_bits(),
            m["soft_sign"].to_bits(),
            "chunk {chunk}"
        );
    }
}

#[test]
fn hand_computed_tssd() {
    // μ = |a|+|b| = [2, 4, 4, 1]; products a·b = [1, −4, −3, 0.25].
    let a = [1.0, -2.0, 3.0, 0.5];
    let b = [1.0, 2.0, -1.0, 0.5];
    // k = 50 %: m = 2, coordinates 1 and 2: ½(1 − (−7)/7) = 1.
    assert_eq!(distances(&a, &b, 50.0, 1)["truncated_soft_sign"], 1.0);
    // k = 75 %: m = 3, adds coordinate 0: ½(1 − (−6)/8) = 0.875.
    assert_eq!(distances(&a, &b, 75.0, 3)["truncated_soft_sign"], 0.875);
    // SSD over all: ½(1 − (−5.75)/8.25).
    let ssd = 0.5 * (1.0 + 5.75 / 8.25);
    assert!((distances(&a, &b, 20.0, 2)["soft_sign"] - ssd).abs() < 1e-15);

    // All four magnitudes tie: the lowest indices are taken, across chunk borders.
    let a = [1.0, 1.0, 1.0, 1.0];
    let b = [1.0, -1.0, 1.0, -1.0];
    for chunk in [1, 2, 3, 4] {
        assert_eq!(distances(&a, &b, 25.0, chunk)["truncated_soft_sign"], 0.0); // {0}
        assert_eq!(distances(&a, &b, 50.0, chunk)["truncated_soft_sign"], 0.5); // {0, 1}
        let t = distances(&a, &b, 75.0, chunk)["truncated_soft_sign"]; // {0, 1, 2}: ½(1 − 1/3)
        assert!((t - 1.0 / 3.0).abs() < 1e-15, "{t}");
        assert_eq!(distances(&a, &b, 12.5, chunk)["truncated_soft_sign"], 0.0); // m = 1 (0.5 → 1)
    }
}

#[test]
fn task_vectors_subtract_the_base() {
    let w = [1.0f32, 1.0, -1.0, 0.5];
    let a = [2.0f32, 0.0, -1.0, 0.75];
    let b = [0.0f32, 2.0, -3.0, 0.5];
    let ta: Vec<f32> = a.iter().zip(&w).map(|(x, w)| x - w).collect();
    let tb: Vec<f32> = b.iter().zip(&w).map(|(x, w)| x - w).collect();
    let o = opts(50.0, 3);
    let got = slice_distance(&a, &b, Some(&w), &o).unwrap();
    assert_eq!(got, slice_distance(&ta, &tb, None, &o).unwrap());
    // τa = [1, −1, 0, 0.25], τb = [−1, 1, −2, 0]: every sign differs.
    assert_eq!(got.distances()["sign"], 1.0);
}

#[test]
fn empty_and_mismatched_inputs() {
    let m = distances(&[], &[], 20.0, 4);
    assert_eq!(m.0, [0.0; 6]); // six distances, all 0
    let err = slice_distance(&[1.0], &[1.0, 2.0], None, &opts(20.0, 4)).unwrap_err();
    assert!(
        err.to_string().contains("b has 2 elements, expected 1"),
        "{err}"
    );
    let err = slice_distance(&[1.0], &[1.0], Some(&[]), &opts(20.0, 4)).unwrap_err();
    assert!(err.to_string().contains("base has 0 elements"), "{err}");
    let err = slice_distance(&[1.0], &[1.0], None, &opts(0.0, 4)).unwrap_err();
    assert!(err.to_string().contains("tssd_top_k_percent"), "{err}");
}

#[test]
fn nan_propagates_without_panicking() {
    let m = distances(&[1.0, f32::NAN, 2.0], &[1.0, 1.0, -2.0], 50.0, 2);
    assert!(m["l2"].is_nan() && m["cosine"].is_nan() && m["soft_sign"].is_nan());
    assert!(
        m["truncated_soft_sign"].is_nan(),
        "NaN ranks as the largest magnitude"
    );
    assert_eq!(m["sign"], 2.0 / 3.0); // sgn(NaN) = 0 ≠ 1, and 2 vs −2
}

/// Values with many zeros and ties (a small grid) mixed with arbitrary ones.
fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        3 => Just(0.0f32),
        1 => Just(-0.0f32),
        4 => prop::sample::select(vec![-2.0f32, -1.0, -0.5, 0.5, 1.0, 2.0]),
        4 => -100f32..100f32,
        1 => -1e-6f32..1e-6f32,
    ]
}

fn pairs() -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
    prop::collection::vec((value(), value()), 0..300).prop_map(|v| v.into_iter().unzip())
}

fn k_percent() -> impl Strategy<Value = f64> {
    prop_oneof![Just(100.0), Just(20.0), Just(50.0), 0.01f64..=100.0]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn fast_path_matches_oracle((a, b) in pairs(), k in k_percent(), chunk in 1usize..70) {
        let got = slice_distance(&a, &b, None, &opts(k, chunk)).unwrap();
        let want = oracle::all(&a, &b, k);
        assert_close(&got.distances(), want, "random");
        prop_assert_eq!(got.acc.numel, a.len() as u64);
        let n = a.len() as u64;
        prop_assert_eq!(got.tssd_count, crate::distance::tssd_count(n, k));
    }

    #[test]
    fn chunking_changes_nothing_but_rounding((a, b) in pairs(), k in k_percent(), c1 in 1usize..50, c2 in 50usize..400) {
        let x = slice_distance(&a, &b, None, &opts(k, c1)).unwrap().distances();
        let y = slice_distance(&a, &b, None, &opts(k, c2)).unwrap().distances();
        assert_close(&x, y.0, "chunk sizes");
        prop_assert_eq!(x["sign"], y["sign"]);
    }

    #[test]
    fn tssd_at_100_equals_ssd((a, b) in pairs(), chunk in 1usize..70) {
        let m = slice_distance(&a, &b, None, &opts(100.0, chunk)).unwrap().distances();
        prop_assert_eq!(m["truncated_soft_sign"].to_bits(), m["soft_sign"].to_bits());
    }

    #[test]
    fn task_vectors_equal_weights_on_differences(
        (a, b) in pairs(), w in prop::collection::vec(value(), 300), k in k_percent(), chunk in 1usize..70
    ) {
        let w = &w[..a.len()];
        let ta: Vec<f32> = a.iter().zip(w).map(|(x, w)| x - w).collect();
        let tb: Vec<f32> = b.iter().zip(w).map(|(x, w)| x - w).collect();
        let o = opts(k, chunk);
        prop_assert_eq!(
            slice_distance(&a, &b, Some(w), &o).unwrap(),
            slice_distance(&ta, &tb, None, &o).unwrap()
        );
    }
}
