//! Image preprocessing: resize, seeded augmentation (random resized crop, horizontal flip),
//! normalisation to channel-major float pixels, and patchification.
//!
//! Random resized crop follows torchvision's `RandomResizedCrop`: draw an area fraction in
//! `scale` and a log-uniform aspect ratio in `ratio`, up to ten tries for a crop that fits,
//! else the central crop with the ratio clamped into range; then resize the crop bilinearly.
//! Deviation: bilinear resampling is the `image` crate's triangle filter (antialiased when
//! shrinking, like torchvision's `antialias=True`), so pixels differ slightly from PIL's.

use image::RgbImage;
use image::imageops::{self, FilterType};
use rand::Rng;

use crate::error::{DataError, Result};

/// Per-channel mean and standard deviation applied to pixels scaled to [0, 1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalize {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalize {
    /// ImageNet statistics (what BERT-era ViTs and DINOv2 expect).
    pub const IMAGENET: Normalize = Normalize {
        mean: mmerge_core::imagenet::MEAN,
        std: mmerge_core::imagenet::STD,
    };
    /// Maps [0, 1] to [-1, 1] (what VLMo/BEiT use).
    pub const HALF: Normalize = Normalize {
        mean: [0.5; 3],
        std: [0.5; 3],
    };
}

/// Training-time augmentation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Augment {
    /// Area fraction range of the random resized crop; `None` resizes the whole image.
    pub crop_scale: Option<(f32, f32)>,
    /// Aspect-ratio range of the crop (width / height).
    pub crop_ratio: (f32, f32),
    /// Flip horizontally with probability one half. Off by default: the synthetic suite's
    /// spatial questions ("left of") would become false.
    pub hflip: bool,
}

impl Default for Augment {
    fn default() -> Self {
        Self {
            crop_scale: Some((0.5, 1.0)),
            crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
            hflip: false,
        }
    }
}

/// What every image goes through on its way into a batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageTransform {
    /// Output side length (square images).
    pub size: u32,
    pub normalize: Normalize,
    /// `None` at evaluation time.
    pub augment: Option<Augment>,
}

impl ImageTransform {
    /// Channel-major pixels `[3, size, size]`, normalised; `rng` drives the augmentation.
    pub fn apply<R: Rng>(&self, img: &RgbImage, rng: &mut R) -> Result<Vec<f32>> {
        if self.size == 0 || img.width() == 0 || img.height() == 0 {
            return Err(DataError::Shape {
                what: "image transform",
                reason: format!(
                    "cannot make a {0}x{0} image from a {1}x{2} one",
                    self.size,
                    img.width(),
                    img.height()
                ),
            });
        }
        let mut out = match self.augment.and_then(|a| a.crop_scale.map(|s| (a, s))) {
            Some((a, scale)) => {
                let (x, y, w, h) = crop_box(img.width(), img.height(), scale, a.crop_ratio, rng);
                let crop = imageops::crop_imm(img, x, y, w, h).to_image();
                resize(&crop, self.size)
            }
            None => resize(img, self.size),
        };
        if self.augment.is_some_and(|a| a.hflip) && rng.random_bool(0.5) {
            imageops::flip_horizontal_in_place(&mut out);
        }
        Ok(to_chw(&out, &self.normalize))
    }
}

/// Resizes to `size × size` (no crop: the aspect ratio is not kept), bilinear; a no-op copy
/// when the size already matches.
pub fn resize(img: &RgbImage, size: u32) -> RgbImage {
    if img.width() == size && img.height() == size {
        return img.clone();
    }
    imageops::resize(img, size, size, FilterType::Triangle)
}

/// torchvision's `RandomResizedCrop.get_params`: (x, y, width, height) of the crop.
pub fn crop_box<R: Rng>(
    width: u32,
    height: u32,
    scale: (f32, f32),
    ratio: (f32, f32),
    rng: &mut R,
) -> (u32, u32, u32, u32) {
    let area = (width * height) as f32;
    let (lr0, lr1) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.random_range(scale.0..=scale.1);
        let aspect = rng.random_range(lr0..=lr1).exp();
        let w = (target * aspect).sqrt().round() as u32;
        let h = (target / aspect).sqrt().round() as u32;
        if 0 < w && w <= width && 0 < h && h <= height {
            let x = rng.random_range(0..=width - w);
            let y = rng.random_range(0..=height - h);
            return (x, y, w, h);
        }
    }
    let in_ratio = width as f32 / height as f32;
    let (w, h) = if in_ratio < ratio.0 {
        (
            width,
            ((width as f32 / ratio.0).round() as u32).clamp(1, height),
        )
    } else if in_ratio > ratio.1 {
        (
            ((height as f32 * ratio.1).round() as u32).clamp(1, width),
            height,
        )
    } else {
        (width, height)
    };
    ((width - w) / 2, (height - h) / 2, w, h)
}

/// Interleaved RGB bytes to channel-major floats `[3, H, W]`: `(v / 255 − mean) / std`.
pub fn to_chw(img: &RgbImage, n: &Normalize) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let plane = w * h;
    let mut out = vec![0.0f32; 3 * plane];
    let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * n.std[c]));
    let shift: [f32; 3] = std::array::from_fn(|c| n.mean[c] / n.std[c]);
    for (i, px) in img.as_raw().chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = f32::from(px[c]) * scale[c] - shift[c];
        }
    }
    out
}

/// Cuts channel-major pixels `[C, H, W]` into patches `[N, C·P·P]`: patches in row-major
/// order, channel-major inside a patch (the layout of `mmerge_models::heads::patchify` and of
/// the patch embedding's convolution).
pub fn patchify(
    chw: &[f32],
    channels: usize,
    height: usize,
    width: usize,
    patch: usize,
) -> Result<Vec<f32>> {
    if patch == 0
        || !height.is_multiple_of(patch)
        || !width.is_multiple_of(patch)
        || chw.len() != channels * height * width
    {
        return Err(DataError::Shape {
            what: "patchify",
            reason: format!(
                "{} values do not form a [{channels}, {height}, {width}] image cut into {patch}x{patch} patches",
                chw.len()
            ),
        });
    }
    let (gh, gw) = (height / patch, width / patch);
    let mut out = Vec::with_capacity(chw.len());
    for py in 0..gh {
        for px in 0..gw {
            for c in 0..channels {
                for dy in 0..patch {
                    let row = c * height * width + (py * patch + dy) * width + px * patch;
                    out.extend_from_slice(&chw[row..row + patch]);
                }
            }
        }
    }
    Ok(out)
}
