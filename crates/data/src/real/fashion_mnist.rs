//! Fashion-MNIST from Debian `dataset-fashion-mnist`: the four IDX files, gunzipped by
//! `datasets/build-real-assets` into `<sources>/fashion-mnist/`.
//!
//! IDX: a big-endian header `0x00 0x00 <type> <ndims>` (only type 0x08, unsigned bytes, is
//! used: magic 0x0803 for images, 0x0801 for labels), then `ndims` big-endian `u32`
//! dimensions, then the data, row-major.

use std::collections::BTreeMap;
use std::path::Path;

use image::{Rgb, RgbImage};
use rayon::prelude::*;

use super::util::{Split, class_list, encode_png, fraction, majority_baseline};
use crate::error::{DataError, Result, io};
use crate::layout::{CLASSES as CLASSES_FILE, image_cls_image, in_task};
use crate::out::SuiteDir;
use crate::suite::{TaskEntry, TaskKind};

/// The ten classes, by label index, as folder names.
pub const CLASSES: [&str; 10] = [
    "t-shirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
];

/// The official training set is subsampled to this many images per class (the first ones in
/// file order) for `train`...
pub const TRAIN_PER_CLASS: usize = 1_000;
/// ...and the next this many per class form `val`. `test` is the full official test set.
pub const VAL_PER_CLASS: usize = 100;

/// A parsed IDX file of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

impl Idx {
    /// The number of bytes of one item (the product of all dimensions after the first).
    pub fn item_len(&self) -> usize {
        self.dims.iter().skip(1).product()
    }

    /// Item `i` (for images: `rows × cols` grey pixels).
    pub fn item(&self, i: usize) -> &[u8] {
        let n = self.item_len();
        &self.data[i * n..(i + 1) * n]
    }
}

/// Parses an IDX file of unsigned bytes (`path` names it in errors).
pub fn parse_idx(path: &Path, bytes: &[u8]) -> Result<Idx> {
    let bad = |reason: String| DataError::BadRecord {
        path: path.to_path_buf(),
        record: "IDX header".into(),
        reason,
    };
    if bytes.len() < 4 {
        return Err(bad(format!(
            "{} bytes: too short for an IDX magic",
            bytes.len()
        )));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad(format!(
            "magic {magic:#010x}: must start with two zero bytes"
        )));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!(
            "magic {magic:#010x}: element type {:#04x} is not 0x08 (unsigned byte)",
            bytes[2]
        )));
    }
    let ndims = usize::from(bytes[3]);
    if ndims == 0 {
        return Err(bad(format!("magic {magic:#010x}: zero dimensions")));
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(bad(format!(
            "{} bytes: too short for {ndims} dimensions",
            bytes.len()
        )));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let len = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(format!("dimensions {dims:?} overflow")))?;
    if bytes.len() - header != len {
        return Err(bad(format!(
            "dimensions {dims:?} need {len} data bytes, the file has {}",
            bytes.len() - header
        )));
    }
    Ok(Idx {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// One official split: images (n × 28 × 28) and labels (n).
#[derive(Debug)]
pub struct Set {
    pub images: Idx,
    pub labels: Vec<u8>,
}

fn read_idx(path: &Path) -> Result<Idx> {
    let bytes = io(path, std::fs::read(path))?;
    parse_idx(path, &bytes)
}

/// Reads `<dir>/<prefix>-images-idx3-ubyte` and `<dir>/<prefix>-labels-idx1-ubyte`
/// (`prefix` is `train` or `t10k`) and checks that they agree.
pub fn load(dir: &Path, prefix: &str) -> Result<Set> {
    let ip = dir.join(format!("{prefix}-images-idx3-ubyte"));
    let lp = dir.join(format!("{prefix}-labels-idx1-ubyte"));
    let images = read_idx(&ip)?;
    let labels = read_idx(&lp)?;
    let bad = |path: &Path, reason: String| DataError::BadRecord {
        path: path.to_path_buf(),
        record: "IDX header".into(),
        reason,
    };
    if images.dims.len() != 3 {
        return Err(bad(&ip, format!("dimensions {:?}: want 3", images.dims)));
    }
    if labels.dims.len() != 1 {
        return Err(bad(&lp, format!("dimensions {:?}: want 1", labels.dims)));
    }
    if images.dims[0] != labels.dims[0] {
        return Err(bad(
            &lp,
            format!("{} labels for {} images", labels.dims[0], images.dims[0]),
        ));
    }
    if let Some(pos) = labels
        .data
        .iter()
        .position(|&l| usize::from(l) >= CLASSES.len())
    {
        return Err(DataError::BadRecord {
            path: lp,
            record: format!("label {pos}"),
            reason: format!("class {} is not in 0..10", labels.data[pos]),
        });
    }
    Ok(Set {
        labels: labels.data,
        images,
    })
}

/// Writes the `fashion_mnist_cls` image-folder task: `train` = the first
/// [`TRAIN_PER_CLASS`] images of each class of the official training set, `val` = the next
/// [`VAL_PER_CLASS`], `test` = the whole official test set; 28×28 grey written as RGB PNG,
/// named `<official split>-<index in the official file:05>.png`; `classes.txt` in label order.
pub(crate) fn write_task(suite: &SuiteDir, dir: &Path) -> Result<TaskEntry> {
    let name = "fashion_mnist_cls";
    let train = load(dir, "train")?;
    let test = load(dir, "t10k")?;
    let mut picks: Vec<(Split, &Set, &str, usize)> = Vec::new();
    let mut seen = [0usize; 10];
    for (i, &l) in train.labels.iter().enumerate() {
        let c = usize::from(l);
        let split = match seen[c] {
            n if n < TRAIN_PER_CLASS => Split::Train,
            n if n < TRAIN_PER_CLASS + VAL_PER_CLASS => Split::Val,
            _ => continue,
        };
        seen[c] += 1;
        picks.push((split, &train, "train", i));
    }
    if let Some(c) = seen
        .iter()
        .position(|&n| n < TRAIN_PER_CLASS + VAL_PER_CLASS)
    {
        return Err(DataError::BadRecord {
            path: dir.join("train-labels-idx1-ubyte"),
            record: format!("class {}", CLASSES[c]),
            reason: format!(
                "{} images, fewer than the {} needed for train + val",
                seen[c],
                TRAIN_PER_CLASS + VAL_PER_CLASS
            ),
        });
    }
    picks.extend((0..test.labels.len()).map(|i| (Split::Test, &test, "test", i)));
    picks
        .par_iter()
        .try_for_each(|&(split, set, official, i)| {
            let (rows, cols) = (set.images.dims[1] as u32, set.images.dims[2] as u32);
            let grey = set.images.item(i);
            let img = RgbImage::from_fn(cols, rows, |x, y| {
                let v = grey[(y * cols + x) as usize];
                Rgb([v, v, v])
            });
            let class = CLASSES[usize::from(set.labels[i])];
            let file = format!("{official}-{i:05}.png");
            let rel = in_task(name, &image_cls_image(split.name(), class, &file));
            let png = encode_png(&img, &suite.root().join(&rel))?;
            suite.write(&rel, &png)
        })?;
    suite.write(&in_task(name, CLASSES_FILE), class_list(CLASSES).as_bytes())?;
    let labels = |split: Split| -> Vec<&str> {
        picks
            .iter()
            .filter(|p| p.0 == split)
            .map(|&(_, set, _, i)| CLASSES[usize::from(set.labels[i])])
            .collect()
    };
    let (tr, te) = (labels(Split::Train), labels(Split::Test));
    let mut baselines = BTreeMap::new();
    baselines.insert("majority".into(), majority_baseline(&tr, &te));
    baselines.insert("chance".into(), fraction(1, CLASSES.len()));
    Ok(TaskEntry {
        name: name.into(),
        kind: TaskKind::ImageCls,
        root: name.into(),
        official: None,
        counts: Split::ALL
            .iter()
            .map(|&s| {
                (
                    s.name().to_string(),
                    picks.iter().filter(|p| p.0 == s).count(),
                )
            })
            .collect(),
        baselines,
        description: format!(
            "Fashion-MNIST: 28x28 clothing image -> class (10); train = first {TRAIN_PER_CLASS}/class of the official {} training images, val = next {VAL_PER_CLASS}/class, test = the official {} test images",
            train.labels.len(),
            test.labels.len()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_images_and_labels() {
        let p = Path::new("x");
        let mut img = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3];
        img.extend(1..=12u8);
        let idx = parse_idx(p, &img).unwrap();
        assert_eq!(idx.dims, [2, 2, 3]);
        assert_eq!(idx.item_len(), 6);
        assert_eq!(idx.item(1), [7, 8, 9, 10, 11, 12]);
        let lab = parse_idx(p, &[0, 0, 8, 1, 0, 0, 0, 3, 9, 0, 4]).unwrap();
        assert_eq!(lab.dims, [3]);
        assert_eq!(lab.data, [9, 0, 4]);
    }

    #[test]
    fn rejects_bad_headers() {
        let p = Path::new("x");
        let err = |b: &[u8]| parse_idx(p, b).unwrap_err().to_string();
        assert_eq!(
            err(&[0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0]),
            "x: record IDX header: magic 0x00000d01: element type 0x0d is not 0x08 (unsigned byte)"
        );
        assert_eq!(
            err(&[0, 0, 8, 1, 0, 0, 0, 3, 1, 2]),
            "x: record IDX header: dimensions [3] need 3 data bytes, the file has 2"
        );
        assert_eq!(
            err(&[1, 0, 8, 1]),
            "x: record IDX header: magic 0x01000801: must start with two zero bytes"
        );
        assert_eq!(
            err(&[0, 0, 8, 2, 0, 0]),
            "x: record IDX header: 6 bytes: too short for 2 dimensions"
        );
    }
}
