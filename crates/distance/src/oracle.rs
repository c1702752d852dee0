//! The float64 oracles: every distance of [`crate::distance::DISTANCES`] as a plain loop over
//! whole vectors, written for obviousness, with TSSD's top-m set found by a full stable sort.
//! The streaming accumulators are tested against these. Each takes `(a, b, k %)` (only TSSD
//! reads k); `a` and `b` have equal lengths d, and every distance of empty vectors is 0.

#[cfg(test)]
use crate::distance::{Accumulated, DISTANCES};

fn pairs<'a>(a: &'a [f32], b: &'a [f32]) -> impl Iterator<Item = (f64, f64)> + 'a {
    a.iter().zip(b).map(|(x, y)| (f64::from(*x), f64::from(*y)))
}

/// `sqrt(Σ (a_i − b_i)²)`.
pub fn l2(a: &[f32], b: &[f32], _: f64) -> f64 {
    let mut sq = 0.0;
    for (x, y) in pairs(a, b) {
        sq += (x - y) * (x - y);
    }
    sq.sqrt()
}

/// `l2 / sqrt(d)`.
pub fn l2_normalized(a: &[f32], b: &[f32], k: f64) -> f64 {
    if a.is_empty() {
        return 0.0;
    }
    l2(a, b, k) / (a.len() as f64).sqrt()
}

/// `1 − ⟨a,b⟩ / (‖a‖‖b‖)`, 0 when both norms are 0, 1 when one is, clamped to [0, 2].
pub fn cosine(a: &[f32], b: &[f32], _: f64) -> f64 {
    let (mut dot, mut na, mut nb) = (0.0, 0.0, 0.0);
    for (x, y) in pairs(a, b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 && nb == 0.0 {
        0.0
    } else if na == 0.0 || nb == 0.0 {
        1.0
    } else {
        (1.0 - dot / (na.sqrt() * nb.sqrt())).clamp(0.0, 2.0)
    }
}

fn sgn(v: f64) -> i32 {
    if v > 0.0 {
        1
    } else if v < 0.0 {
        -1
    } else {
        0
    }
}

/// The fraction of coordinates whose signs (−1, 0, +1) differ.
pub fn sign(a: &[f32], b: &[f32], _: f64) -> f64 {
    if a.is_empty() {
        return 0.0;
    }
    let differ = pairs(a, b).filter(|(x, y)| sgn(*x) != sgn(*y)).count();
    differ as f64 / a.len() as f64
}

fn soft(dot: f64, abs_dot: f64) -> f64 {
    if abs_dot == 0.0 {
        0.0
    } else {
        (0.5 * (1.0 - dot / abs_dot)).clamp(0.0, 1.0)
    }
}

/// `½ (1 − Σ a_i b_i / Σ |a_i||b_i|)`, 0 when the denominator is 0.
pub fn soft_sign(a: &[f32], b: &[f32], _: f64) -> f64 {
    let (mut dot, mut abs_dot) = (0.0, 0.0);
    for (x, y) in pairs(a, b) {
        dot += x * y;
        abs_dot += x.abs() * y.abs();
    }
    soft(dot, abs_dot)
}

/// The soft sign dissimilarity over the m = round_half_up(k/100 · d) (clamped to [1, d])
/// coordinates of largest `|a_i| + |b_i|` (f32), ties by lowest index.
pub fn truncated_soft_sign(a: &[f32], b: &[f32], k_percent: f64) -> f64 {
    let d = a.len();
    if d == 0 {
        return 0.0;
    }
    let m = (((k_percent * d as f64) / 100.0 + 0.5).floor() as usize).clamp(1, d);
    let key: Vec<f32> = (0..d).map(|i| a[i].abs() + b[i].abs()).collect();
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&i, &j| key[j].total_cmp(&key[i]));
    let (mut dot, mut abs_dot) = (0.0, 0.0);
    for &i in &order[..m] {
        let (x, y) = (f64::from(a[i]), f64::from(b[i]));
        dot += x * y;
        abs_dot += x.abs() * y.abs();
    }
    soft(dot, abs_dot)
}

/// Every distance of `a` vs `b`, in registry order (for the tests).
#[cfg(test)]
pub fn all(a: &[f32], b: &[f32], k_percent: f64) -> [f64; DISTANCES.len()] {
    DISTANCES.map(|d| (d.oracle)(a, b, k_percent))
}

/// Every distance of a group of tensor pairs: full-sum distances on the concatenation, top-k
/// ones as the numel-weighted mean of the tensors' values (for the tests).
#[cfg(test)]
pub fn group(pairs: &[(Vec<f32>, Vec<f32>)], k_percent: f64) -> [f64; DISTANCES.len()] {
    let a: Vec<f32> = pairs.iter().flat_map(|p| p.0.iter().copied()).collect();
    let b: Vec<f32> = pairs.iter().flat_map(|p| p.1.iter().copied()).collect();
    let n: usize = pairs.iter().map(|p| p.0.len()).sum();
    DISTANCES.map(|d| match d.accumulated {
        Accumulated::Full(_) => (d.oracle)(&a, &b, k_percent),
        Accumulated::TopK(_) if n == 0 => 0.0,
        Accumulated::TopK(_) => {
            let weighted: f64 = pairs
                .iter()
                .map(|p| p.0.len() as f64 * (d.oracle)(&p.0, &p.1, k_percent))
                .sum();
            weighted / n as f64
        }
    })
}
