//! Drawing a scene: an RGB image (flat object colours on a grey background with seeded noise,
//! no anti-aliasing) and its class-index mask, and PNG encoding with fixed settings.

use std::path::Path;

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder};
use rand::Rng;

use super::scene::{Layout, Scene, Shape};
use crate::error::{DataError, Result};

/// The background grey before noise (noise is at most `MAX_NOISE`, so it stays grey).
pub const BACKGROUND: u8 = 224;
/// The largest background noise amplitude allowed.
pub const MAX_NOISE: u8 = 30;

/// Whether pixel `(c, r)` of an `s`×`s` box belongs to `shape` (all shapes are symmetric about
/// the vertical axis and touch all four sides of their box).
pub fn covers(shape: Shape, s: u32, c: u32, r: u32) -> bool {
    let s = i64::from(s);
    let dx = 2 * i64::from(c) + 1 - s;
    let dy = 2 * i64::from(r) + 1 - s;
    match shape {
        Shape::Square => true,
        Shape::Circle => dx * dx + dy * dy <= s * s - s,
        // Apex up: row r is r + 1 pixels wide.
        Shape::Triangle => dx.abs() <= i64::from(r) + 1,
        Shape::Cross => {
            let t = cross_arm(s);
            dx.abs() < t || dy.abs() < t
        }
    }
}

/// Arm width of a cross: about a third of the side, with the side's parity so it is centred.
fn cross_arm(s: i64) -> i64 {
    let t = (s / 3).max(1);
    if (s - t) % 2 == 1 { t + 1 } else { t }
}

/// Renders `scene`: (RGB bytes, mask bytes), both row-major, `image_size` square.
pub(crate) fn render(
    layout: &Layout,
    scene: &Scene,
    noise: u8,
    rng: &mut impl Rng,
) -> (Vec<u8>, Vec<u8>) {
    let s = layout.image_size as usize;
    let mut rgb = vec![BACKGROUND; s * s * 3];
    let mut mask = vec![0u8; s * s];
    if noise > 0 {
        let a = i16::from(noise);
        for px in rgb.chunks_exact_mut(3) {
            let v = (i16::from(BACKGROUND) + rng.random_range(-a..=a)).clamp(0, 255) as u8;
            px.fill(v);
        }
    }
    for o in &scene.objects {
        let [x, y, w, _] = o.bbox;
        let colour = o.colour.rgb();
        for r in 0..w {
            for c in 0..w {
                if covers(o.shape, w, c, r) {
                    let i = (y + r) as usize * s + (x + c) as usize;
                    mask[i] = o.shape.class();
                    rgb[3 * i..3 * i + 3].copy_from_slice(&colour);
                }
            }
        }
    }
    (rgb, mask)
}

/// PNG bytes of a square image (`Rgb8` or `L8`), fast deflate and adaptive filtering: the same
/// pixels always give the same bytes.
pub(crate) fn png(
    path: &Path,
    side: u32,
    data: &[u8],
    colour: ExtendedColorType,
) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(data.len() / 2 + 128);
    PngEncoder::new_with_quality(&mut buf, CompressionType::Fast, FilterType::Adaptive)
        .write_image(data, side, side, colour)
        .map_err(|e| DataError::Image {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    Ok(buf)
}
