//! The test oracle: the formulas of [`crate::distance`] as plain `f64` loops over whole
//! vectors, written for obviousness, with TSSD's top-m set found by a full stable sort.

/// `[l2, l2_normalized, cosine, sign, soft_sign, truncated_soft_sign]` of `a` vs `b`.
pub fn metrics(a: &[f32], b: &[f32], k_percent: f64) -> [f64; 6] {
    assert_eq!(a.len(), b.len());
    let d = a.len();
    if d == 0 {
        return [0.0; 6];
    }
    let x: Vec<f64> = a.iter().map(|&v| f64::from(v)).collect();
    let y: Vec<f64> = b.iter().map(|&v| f64::from(v)).collect();

    let mut sq = 0.0;
    let mut dot = 0.0;
    let mut na = 0.0;
    let mut nb = 0.0;
    let mut abs_dot = 0.0;
    let mut differ = 0usize;
    for i in 0..d {
        sq += (x[i] - y[i]) * (x[i] - y[i]);
        dot += x[i] * y[i];
        na += x[i] * x[i];
        nb += y[i] * y[i];
        abs_dot += x[i].abs() * y[i].abs();
        if sign(x[i]) != sign(y[i]) {
            differ += 1;
        }
    }
    let l2 = sq.sqrt();
    let cosine = if na == 0.0 && nb == 0.0 {
        0.0
    } else if na == 0.0 || nb == 0.0 {
        1.0
    } else {
        (1.0 - dot / (na.sqrt() * nb.sqrt())).clamp(0.0, 2.0)
    };
    let ssd = soft(dot, abs_dot);

    // TSSD: rank by the f32 joint magnitude, largest first, ties by lowest index (stable sort).
    let m = (((k_percent * d as f64) / 100.0 + 0.5).floor() as usize).clamp(1, d);
    let key: Vec<f32> = (0..d).map(|i| a[i].abs() + b[i].abs()).collect();
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&i, &j| key[j].total_cmp(&key[i]));
    let (mut tdot, mut tabs) = (0.0, 0.0);
    for &i in &order[..m] {
        tdot += x[i] * y[i];
        tabs += x[i].abs() * y[i].abs();
    }
    [
        l2,
        l2 / (d as f64).sqrt(),
        cosine,
        differ as f64 / d as f64,
        ssd,
        soft(tdot, tabs),
    ]
}

fn sign(v: f64) -> i32 {
    if v > 0.0 {
        1
    } else if v < 0.0 {
        -1
    } else {
        0
    }
}

fn soft(dot: f64, abs_dot: f64) -> f64 {
    if abs_dot == 0.0 {
        0.0
    } else {
        (0.5 * (1.0 - dot / abs_dot)).clamp(0.0, 1.0)
    }
}

/// Metrics of a group of tensor pairs: the first five on the concatenation, TSSD as the
/// numel-weighted mean of the per-tensor oracle TSSDs.
pub fn group(pairs: &[(Vec<f32>, Vec<f32>)], k_percent: f64) -> [f64; 6] {
    let a: Vec<f32> = pairs.iter().flat_map(|p| p.0.iter().copied()).collect();
    let b: Vec<f32> = pairs.iter().flat_map(|p| p.1.iter().copied()).collect();
    let mut out = metrics(&a, &b, k_percent);
    let n: usize = pairs.iter().map(|p| p.0.len()).sum();
    let weighted: f64 = pairs
        .iter()
        .map(|p| p.0.len() as f64 * metrics(&p.0, &p.1, k_percent)[5])
        .sum();
    out[5] = if n == 0 { 0.0 } else { weighted / n as f64 };
    out
}
