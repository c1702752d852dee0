//! Semantic segmentation: a split's images `<stem>.png|jpg` in one folder with class-index
//! masks `<stem>.png` in another (8-bit grey, value = class index, 255 = ignore) and the class
//! names in `classes.txt`, one per line, index = line number from 0 (in our suites
//! `<split>/images/`, `<split>/masks/` and `classes.txt` of the task, see `crate::layout`).
//!
//! This is our own layout, modelled on index-mask datasets such as ADE20K's scene parsing
//! release (<http://sceneparsing.csail.mit.edu/>) and Pascal VOC's `SegmentationClass`
//! (<http://host.robots.ox.ac.uk/pascal/VOC/>), whose 255 marks pixels to ignore.
//! Deviations: masks must be 8-bit greyscale PNGs: VOC's palette PNGs (and 16-bit or RGB
//! masks) are rejected, not converted; image extensions are `.png`, `.jpg`, `.jpeg` (any
//! case); at most 255 classes. Reading checks that each image has a mask (and each mask an
//! image); sizes and values are checked when a mask is decoded ([`load_mask`],
//! [`SegExample::load`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::image_folder::is_image_name;
use super::{Loaded, ReadOptions, Skipper, bad};
use crate::error::{DataError, Result, io};
use crate::image::{ImageRef, decode_rgb};

/// The mask value of pixels that carry no label.
pub const IGNORE: u8 = 255;

/// One image with its mask (not decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegExample {
    /// The file name without extension, shared by image and mask.
    pub stem: String,
    pub image: ImageRef,
    pub mask: PathBuf,
}

/// A split: the class names and the examples, by stem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentationSplit {
    pub classes: Vec<String>,
    pub examples: Vec<SegExample>,
}

/// A decoded mask: row-major class indices (or [`IGNORE`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

/// Reads `classes.txt`: one non-empty, distinct name per line (a final newline is
/// optional), at most 255 classes.
pub fn read_classes(path: &Path) -> Result<Vec<String>> {
    let text = io(path, std::fs::read_to_string(path))?;
    let body = text.strip_suffix('\n').unwrap_or(&text);
    let mut classes: Vec<String> = Vec::new();
    for (i, l) in body.split('\n').enumerate() {
        let name = l.strip_suffix('\r').unwrap_or(l).trim();
        let record = format!("line {}", i + 1);
        if name.is_empty() {
            return Err(bad(path, record, "empty class name"));
        }
        if let Some(j) = classes.iter().position(|c| c == name) {
            return Err(bad(
                path,
                record,
                format!("class `{name}` repeats line {}", j + 1),
            ));
        }
        classes.push(name.to_string());
    }
    if classes.len() > usize::from(IGNORE) {
        return Err(bad(
            path,
            format!("line {}", classes.len()),
            "more than 255 classes (255 is the ignore value)",
        ));
    }
    Ok(classes)
}

/// The (stem, path) of each non-hidden file of `dir`, sorted by name.
fn files(dir: &Path) -> Result<Vec<(String, String, PathBuf)>> {
    let mut v = Vec::new();
    for e in io(dir, std::fs::read_dir(dir))? {
        let e = io(dir, e)?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = e.path();
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        v.push((name, stem, path));
    }
    v.sort();
    Ok(v)
}

/// Where a segmentation split lives (`crate::layout` builds these for a suite's tasks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentationSource {
    /// `classes.txt`.
    pub classes: PathBuf,
    /// The split's image folder.
    pub images: PathBuf,
    /// The split's mask folder.
    pub masks: PathBuf,
    /// The split's name, for [`DataError::EmptySplit`].
    pub split: String,
}

impl SegmentationSource {
    /// Reads the split.
    ///
    /// Errors: an image without a mask is [`DataError::MissingImage`]; a mask without an
    /// image, two images with one stem, or a file that is not an image are bad records (all
    /// skippable); no images is [`DataError::EmptySplit`].
    pub fn read(&self, opts: ReadOptions) -> Result<Loaded<SegmentationSplit>> {
        read_segmentation(self, opts)
    }
}

fn read_segmentation(
    src: &SegmentationSource,
    opts: ReadOptions,
) -> Result<Loaded<SegmentationSplit>> {
    let classes = read_classes(&src.classes)?;
    let images_dir = src.images.clone();
    let masks_dir = src.masks.clone();
    let mut skipper = Skipper::new(opts);
    let mut images: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (name, stem, path) in files(&images_dir)? {
        let record = format!("image `{name}`");
        let r = if !is_image_name(&name) || !path.is_file() {
            Err(bad(&path, record, "not a .png, .jpg or .jpeg image"))
        } else if images.contains_key(&stem) {
            Err(bad(
                &path,
                record,
                format!("another image has the stem `{stem}`"),
            ))
        } else {
            Ok(())
        };
        if skipper.check(r)?.is_some() {
            images.insert(stem, path);
        }
    }
    let mut masks: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (name, stem, path) in files(&masks_dir)? {
        let record = format!("mask `{name}`");
        let r = if !name.to_ascii_lowercase().ends_with(".png") || !path.is_file() {
            Err(bad(&path, record, "not a .png mask"))
        } else if !images.contains_key(&stem) {
            Err(bad(
                &path,
                record,
                format!("no image `{stem}.*` in {}", images_dir.display()),
            ))
        } else {
            Ok(())
        };
        if skipper.check(r)?.is_some() {
            masks.insert(stem, path);
        }
    }
    let mut examples = Vec::with_capacity(images.len());
    for (stem, image) in images {
        let r = match masks.remove(&stem) {
            Some(mask) => Ok(mask),
            None => Err(DataError::MissingImage {
                path: image.clone(),
                record: format!("image `{stem}`"),
                image: masks_dir.join(format!("{stem}.png")),
            }),
        };
        if let Some(mask) = skipper.check(r)? {
            examples.push(SegExample {
                stem,
                image: ImageRef::new(image),
                mask,
            });
        }
    }
    if examples.is_empty() {
        return Err(DataError::EmptySplit {
            path: images_dir,
            split: src.split.clone(),
        });
    }
    Ok(skipper.finish(SegmentationSplit { classes, examples }))
}

/// Decodes a mask. Errors ([`DataError::Image`]): not a PNG, not 8-bit greyscale, or a
/// value that is neither a class index (`< num_classes`) nor [`IGNORE`] (the first such
/// pixel is named).
pub fn load_mask(path: &Path, num_classes: usize) -> Result<Mask> {
    let err = |reason: String| DataError::Image {
        path: path.to_path_buf(),
        reason,
    };
    let reader = io(
        path,
        image::ImageReader::open(path).and_then(|r| r.with_guessed_format()),
    )?;
    if reader.format() != Some(image::ImageFormat::Png) {
        return Err(err(format!(
            "a mask must be a PNG file, found {:?}",
            reader.format()
        )));
    }
    let img = reader.decode().map_err(|e| err(e.to_string()))?;
    if img.color() != image::ColorType::L8 {
        return Err(err(format!(
            "a mask must be 8-bit greyscale, found {:?}",
            img.color()
        )));
    }
    let grey = img.into_luma8();
    let (width, height) = grey.dimensions();
    let data = grey.into_raw();
    if let Some(k) = data
        .iter()
        .position(|&v| v != IGNORE && usize::from(v) >= num_classes)
    {
        let w = width as usize;
        return Err(err(format!(
            "pixel ({}, {}) has value {}: not a class index (0..{num_classes}) nor {IGNORE} (ignore)",
            k % w.max(1),
            k / w.max(1),
            data[k]
        )));
    }
    Ok(Mask {
        width,
        height,
        data,
    })
}

impl SegExample {
    /// Decodes the image (RGB) and its mask, checking the mask ([`load_mask`]) and that
    /// both have the same size.
    pub fn load(&self, num_classes: usize) -> Result<(image::RgbImage, Mask)> {
        let img = decode_rgb(&self.image.path)?;
        let mask = load_mask(&self.mask, num_classes)?;
        if img.dimensions() != (mask.width, mask.height) {
            return Err(DataError::Image {
                path: self.mask.clone(),
                reason: format!(
                    "mask is {}x{} but image {} is {}x{}",
                    mask.width,
                    mask.height,
                    self.image.path.display(),
                    img.width(),
                    img.height()
                ),
            });
        }
        Ok((img, mask))
    }
}
