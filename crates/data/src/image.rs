//! Images: a lazy reference to a file on disk, decoded only when a batch needs it.

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

/// An image file that has not been decoded yet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    pub path: PathBuf,
}

impl ImageRef {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Decodes the file to 8-bit RGB (alpha is composited over white).
    pub fn load_rgb(&self) -> Result<image::RgbImage> {
        decode_rgb(&self.path)
    }
}

/// Decodes a png or jpeg file to 8-bit RGB; transparent pixels are composited over white.
/// The format comes from the file's bytes, not its name (some of NLVR2's `.png` files hold
/// JPEG data).
pub fn decode_rgb(path: &Path) -> Result<image::RgbImage> {
    let bad = |reason: String| DataError::Image {
        path: path.to_path_buf(),
        reason,
    };
    let img = image::ImageReader::open(path)
        .map_err(|e| DataError::Io {
            path: path.to_path_buf(),
            error: e,
        })?
        .with_guessed_format()
        .map_err(|e| bad(e.to_string()))?
        .decode()
        .map_err(|e| bad(e.to_string()))?;
    if !img.color().has_alpha() {
        return Ok(img.into_rgb8());
    }
    let rgba = img.into_rgba8();
    let mut out = image::RgbImage::new(rgba.width(), rgba.height());
    for (o, p) in out.pixels_mut().zip(rgba.pixels()) {
        let a = u32::from(p[3]);
        for c in 0..3 {
            o[c] = ((u32::from(p[c]) * a + 255 * (255 - a) + 127) / 255) as u8;
        }
    }
    Ok(out)
}
