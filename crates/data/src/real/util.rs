//! Helpers shared by the real-asset sources: fixed hash splits, seeded randomness, image
//! normalisation, hard links and the text-only baselines as the manifest rounds them (the
//! priors themselves are [`crate::score::Prior`]).

use std::path::Path;

use image::{Rgb, RgbImage, imageops};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use mmerge_core::hash::{fnv1a, splitmix64};

use crate::error::{DataError, Result, io};
use crate::score::Prior;

/// The seed of every random choice in the suite (negatives, pairs, statement order).
pub const SEED: u64 = 0x6d6d_6572_6765;

/// Side of the square every Tux Paint and emoji image is normalised to.
pub const IMAGE_SIZE: u32 = 64;

pub use crate::suite::Split;

/// The fixed 80/10/10 split of item `name` of `source`: a pure function of the two strings,
/// so adding or removing items never moves the others.
pub fn split_of(source: &str, name: &str) -> Split {
    let h = splitmix64(fnv1a(format!("{source}/{name}").as_bytes())) % 1000;
    match h {
        0..800 => Split::Train,
        800..900 => Split::Val,
        _ => Split::Test,
    }
}

/// A random stream for one named purpose (same tag, same numbers).
pub fn rng(tag: &str) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(SEED ^ splitmix64(fnv1a(tag.as_bytes())))
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

/// Accuracy on `test` of always answering the most frequent `train` label
/// ([`Prior::majority_accuracy`]), rounded as [`fraction`] rounds.
pub fn majority_baseline(train: &[&str], test: &[&str]) -> f64 {
    let prior = Prior::fit(train.iter().map(|&l| ("", l)));
    round6(prior.majority_accuracy(test.iter().map(|&l| ("", l))))
}

/// Accuracy on `test` of answering, for each key (a question or statement string), the most
/// frequent `train` label of that key, and the overall majority for keys not seen in train
/// ([`Prior::accuracy`]), rounded as [`fraction`] rounds.
pub fn prior_baseline(train: &[(&str, &str)], test: &[(&str, &str)]) -> f64 {
    round6(Prior::fit(train.iter().copied()).accuracy(test.iter().copied()))
}

/// `x` rounded to 6 decimals, so manifests are stable.
fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// `num / den` (0 for an empty denominator), rounded to 6 decimals so manifests are stable.
pub fn fraction(num: usize, den: usize) -> f64 {
    if den == 0 {
        return 0.0;
    }
    round6(num as f64 / den as f64)
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
        assert_eq!(
            majority_baseline(&["x", "x", "y"], &["x", "y", "y", "x"]),
            0.5
        );
        let train = [("q1", "yes"), ("q1", "yes"), ("q2", "no")];
        let test = [("q1", "yes"), ("q2", "no"), ("q3", "yes"), ("q3", "no")];
        assert_eq!(prior_baseline(&train, &test), 0.75);
    }
}
