//! The distance registry is complete: every entry of [`DISTANCES`] has a formula that
//! `SCHEMA.md` states in its row, appears in the report's JSON, and has an oracle that the
//! streamed value matches, per tensor and per group.

use crate::distance::{DISTANCES, DistanceOptions, GroupStats};
use crate::oracle;
use crate::stream::slice_distance;

const SCHEMA_MD: &str = include_str!("../../SCHEMA.md");

#[test]
fn every_distance_has_a_formula_in_the_schema() {
    let schema = SCHEMA_MD.replace("\\|", "|");
    let listed = schema
        .lines()
        .find(|l| l.starts_with("<distances> ="))
        .unwrap_or_default()
        .to_string();
    let mut names: Vec<&str> = DISTANCES.iter().map(|d| d.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), DISTANCES.len(), "distance names are unique");
    for d in &DISTANCES {
        assert!(d.formula.len() >= 5, "{}: state its formula", d.name);
        let row = schema
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", d.name)))
            .unwrap_or_else(|| panic!("{}: SCHEMA.md has no row for it", d.name));
        assert!(
            row.contains(d.formula),
            "{}: SCHEMA.md's row must state `{}`",
            d.name,
            d.formula
        );
        assert!(
            listed.contains(&format!("\"{}\"", d.name)),
            "{}: SCHEMA.md's <distances> line must list it",
            d.name
        );
    }
}

/// Deterministic test vectors with zeros, ties and both signs.
fn vectors(seed: u64, n: usize) -> (Vec<f32>, Vec<f32>) {
    let mut g = mmerge_core::hash::SplitMix64::new(seed);
    let mut next = || {
        let s = g.next_u64();
        match s % 5 {
            0 => 0.0,
            1 => 0.5,
            _ => ((s >> 20) % 2001) as f32 / 1000.0 - 1.0,
        }
    };
    let a = (0..n).map(|_| next()).collect();
    let b = (0..n).map(|_| next()).collect();
    (a, b)
}

#[test]
fn every_distance_matches_its_oracle() {
    for (seed, n, k, chunk) in [
        (1, 1, 20.0, 3),
        (2, 97, 20.0, 7),
        (3, 300, 37.5, 64),
        (4, 0, 20.0, 5),
    ] {
        let opts = DistanceOptions {
            tssd_top_k_percent: k,
            chunk_len: chunk,
        };
        let (a, b) = vectors(seed, n);
        let t = slice_distance(&a, &b, None, &opts).expect("equal lengths");
        for d in &DISTANCES {
            let (got, want) = (t.value(d), (d.oracle)(&a, &b, k));
            assert!(
                (got - want).abs() <= 1e-9 * want.abs() + 1e-12,
                "{} (n = {n}): streamed {got}, oracle {want}",
                d.name
            );
        }
        // A group of three tensors against the group oracle.
        let pairs: Vec<(Vec<f32>, Vec<f32>)> = (0..3)
            .map(|i| vectors(seed * 10 + i, n + i as usize * 5))
            .collect();
        let mut g = GroupStats::default();
        for (x, y) in &pairs {
            g.add(&slice_distance(x, y, None, &opts).expect("equal lengths"));
        }
        let want = oracle::group(&pairs, k);
        for ((d, got), want) in DISTANCES.iter().zip(g.distances().0).zip(want) {
            assert!(
                (got - want).abs() <= 1e-9 * want.abs() + 1e-12,
                "{} group: streamed {got}, oracle {want}",
                d.name
            );
        }
    }
}
