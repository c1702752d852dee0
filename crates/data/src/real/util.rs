//! Helpers shared by the real-asset sources: fixed hash splits, seeded randomness, image
//! normalisation, hard links and text-only baselines.

use std::collections::BTreeMap;
use std::path::Path;

use image::{Rgb, RgbImage, imageops};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{DataError, Result, io};

/// The seed of every random choice in the suite (negatives, pairs, statement order).
pub const SEED: u64 = 0x6d6d_6572_6765;

/// Side of the square every Tux Paint and emoji image is normalised to.
pub const IMAGE_SIZE: u32 = 64;

pub use crate::suite::Split;

/// 64-bit FNV-1a.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The splitmix64 finaliser (spreads FNV's low bits).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The fixed 80/10/10 split of item `name` of `source`: a pure function of the two strings,
/// so adding or removing items never moves the others.
pub fn split_of(source: &str, name: &str) -> Split {
    let h = mix(fnv1a(format!("{source}/{name}").as_bytes())) % 1000;
    match h {
        0..800 => Split::Train,
        800..900 => Split::Val,
        _ => Split::Test,
    }
}

/// A random stream for one named purpose (same tag, same numbers).
pub fn rng(tag: &str) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(SEED ^ mix(fnv1a(tag.as_bytes())))
}

/// Scales `img` so that its longer side is `size` (aspect kept) and centres it on a white
/// `size`×`size` canvas.
pub fn fit_square(img: RgbImage, size: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    if w == size && h == size {
        return img;
    }
    let long = w.max(h).max(1);
    let scaled = |x: u32| -> u32 {
        let v = (u64::from(x) * u64::from(size) + u64::from(long) / 2) / u64::from(long);
        (v as u32).clamp(1, size)
    };
    let (nw, nh) = (scaled(w), scaled(h));
    let resized = imageops::resize(&img, nw, nh, imageops::FilterType::Lanczos3);
    let mut canvas = RgbImage::from_pixel(size, size, Rgb([255, 255, 255]));
    imageops::overlay(
        &mut canvas,
        &resized,
        i64::from((size - nw) / 2),
        i64::from((size - nh) / 2),
    );
    canvas
}

/// Encodes `img` as PNG (`what` names it in errors).
pub fn encode_png(img: &RgbImage, what: &Path) -> Result<Vec<u8>> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| DataError::Image {
            path: what.to_path_buf(),
            reason: e.to_string(),
        })?;
    Ok(out.into_inner())
}

/// Makes `dst` the same file as `src` (a hard link; a copy where links are not possible),
/// creating `dst`'s folder.
pub fn link_or_copy(src: &Path, dst: &Path) -> Result<()> {
    if let Some(parent) = dst.parent() {
        io(parent, std::fs::create_dir_all(parent))?;
    }
    if std::fs::hard_link(src, dst).is_ok() {
        return Ok(());
    }
    io(dst, std::fs::copy(src, dst).map(|_| ()))
}

pub use crate::suite::class_list;

/// Karpathy-style tokens: lower-cased runs of letters and digits.
pub fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The most frequent label (ties: the smallest), or `None` for no labels.
pub fn majority<'a>(labels: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for l in labels {
        *counts.entry(l).or_default() += 1;
    }
    let mut best: Option<(&str, usize)> = None;
    for (l, n) in counts {
        if best.is_none_or(|(_, b)| n > b) {
            best = Some((l, n));
        }
    }
    best.map(|(l, _)| l)
}

/// Accuracy on `test` of always answering the most frequent `train` label.
pub fn majority_baseline(train: &[&str], test: &[&str]) -> f64 {
    let Some(m) = majority(train.iter().copied()) else {
        return 0.0;
    };
    fraction(test.iter().filter(|&&l| l == m).count(), test.len())
}

/// Accuracy on `test` of answering, for each key (a question or statement string), the most
/// frequent `train` label of that key, and the overall majority for keys not seen in train.
pub fn prior_baseline(train: &[(&str, &str)], test: &[(&str, &str)]) -> f64 {
    let mut by_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for &(k, l) in train {
        by_key.entry(k).or_default().push(l);
    }
    let overall = majority(train.iter().map(|&(_, l)| l));
    let prior: BTreeMap<&str, &str> = by_key
        .iter()
        .filter_map(|(k, ls)| majority(ls.iter().copied()).map(|m| (*k, m)))
        .collect();
    let hits = test
        .iter()
        .filter(|&&(k, l)| prior.get(k).copied().or(overall) == Some(l))
        .count();
    fraction(hits, test.len())
}

/// `num / den` (0 for an empty denominator), rounded to 6 decimals so manifests are stable.
pub fn fraction(num: usize, den: usize) -> f64 {
    if den == 0 {
        return 0.0;
    }
    (num as f64 / den as f64 * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_fixed_and_about_80_10_10() {
        let mut n = [0usize; 3];
        for i in 0..10_000 {
            n[split_of("t", &format!("item{i}")) as usize] += 1;
        }
        assert!((7_700..8_300).contains(&n[0]), "{n:?}");
        assert!((800..1_200).contains(&n[1]), "{n:?}");
        assert!((800..1_200).contains(&n[2]), "{n:?}");
        assert_eq!(split_of("t", "item1"), split_of("t", "item1"));
    }

    #[test]
    fn fit_square_keeps_aspect_and_pads_white() {
        let img = RgbImage::from_pixel(20, 10, Rgb([0, 0, 0]));
        let out = fit_square(img, 8);
        assert_eq!(out.dimensions(), (8, 8));
        assert_eq!(out.get_pixel(4, 0), &Rgb([255, 255, 255]));
        assert_eq!(out.get_pixel(4, 7), &Rgb([255, 255, 255]));
        assert_eq!(out.get_pixel(4, 4), &Rgb([0, 0, 0]));
    }

    #[test]
    fn tokens_and_baselines() {
        assert_eq!(
            tokens("Saturn—the 2nd planet!"),
            ["saturn", "the", "2nd", "planet"]
        );
        assert_eq!(majority(["b", "a", "b", "a"]), Some("a"));
        assert_eq!(
            majority_baseline(&["x", "x", "y"], &["x", "y", "y", "x"]),
            0.5
        );
        let train = [("q1", "yes"), ("q1", "yes"), ("q2", "no")];
        let test = [("q1", "yes"), ("q2", "no"), ("q3", "yes"), ("q3", "no")];
        assert_eq!(prior_baseline(&train, &test), 0.75);
    }
}
