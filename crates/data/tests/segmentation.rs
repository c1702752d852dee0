#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The segmentation reader against the fixtures written by `datasets/fixtures/make_fixtures.py`
//! (exact official formats, tiny), and every bad-input case against small files written here.

mod common;

use std::path::Path;

use common::{err, fx};
use mmerge_data::DataError;
use mmerge_data::formats::Loaded;
use mmerge_data::formats::segmentation::SegmentationSplit;
use mmerge_data::formats::segmentation::{IGNORE, Mask, SegExample, load_mask, read_classes};
use mmerge_data::formats::{ReadOptions, SkipKind};
use mmerge_data::image::ImageRef;
use mmerge_data::layout::{Layout, SplitFiles};
use mmerge_data::suite::TaskKind;

/// A segmentation split in our suite layout ([`SplitFiles`]).
fn read_seg(
    root: &Path,
    split: &str,
    opts: ReadOptions,
) -> mmerge_data::Result<Loaded<SegmentationSplit>> {
    match SplitFiles::new(
        root,
        "segmentation",
        TaskKind::Segmentation,
        Layout::Suite,
        split,
    )? {
        SplitFiles::Segmentation(s) => s.read(opts),
        other => panic!("{other:?}"),
    }
}

#[test]
fn segmentation_reads_to_expected() {
    let root = fx().join("segmentation");
    let got = read_seg(&root, "train", ReadOptions::STRICT).unwrap();
    let d = root.join("train");
    assert_eq!(got.examples.classes, ["background", "circle", "square"]);
    assert_eq!(
        got.examples.examples,
        vec![
            SegExample {
                stem: "s0".into(),
                image: ImageRef::new(d.join("images/s0.png")),
                mask: d.join("masks/s0.png"),
            },
            SegExample {
                stem: "s1".into(),
                image: ImageRef::new(d.join("images/s1.jpg")),
                mask: d.join("masks/s1.png"),
            },
        ]
    );
    // s0: left half background, right half circle, top-left pixel ignored.
    let row = [0, 0, 0, 0, 1, 1, 1, 1];
    let mut data: Vec<u8> = row.repeat(8);
    data[0] = IGNORE;
    assert_eq!(
        load_mask(&d.join("masks/s0.png"), 3).unwrap(),
        Mask {
            width: 8,
            height: 8,
            data
        }
    );
    let (img, mask) = got.examples.examples[1].load(3).unwrap();
    assert_eq!(img.dimensions(), (8, 8));
    assert_eq!(mask.data, [[2u8; 56].as_slice(), &[IGNORE; 8]].concat());
    // With only 2 classes, s1's value 2 is out of range.
    assert_eq!(
        err(load_mask(&d.join("masks/s1.png"), 2)).to_string(),
        format!(
            "{}: image: pixel (0, 0) has value 2: not a class index (0..2) nor 255 (ignore)",
            d.join("masks/s1.png").display()
        )
    );
}

#[test]
fn segmentation_bad_masks() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::write(root.join("classes.txt"), "background\nthing").unwrap();
    assert_eq!(
        read_classes(&root.join("classes.txt")).unwrap(),
        ["background", "thing"]
    );
    let images = root.join("train/images");
    let masks = root.join("train/masks");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&masks).unwrap();
    image::RgbImage::new(8, 8)
        .save(images.join("a.png"))
        .unwrap();
    image::RgbImage::new(8, 8)
        .save(images.join("b.png"))
        .unwrap();
    image::RgbImage::new(8, 8)
        .save(images.join("c.png"))
        .unwrap();
    image::RgbImage::new(8, 8)
        .save(images.join("d.png"))
        .unwrap();
    // a: RGB mask; b: a value 5 at (3, 2); c: 4x4; d: 16-bit grey.
    image::RgbImage::new(8, 8)
        .save(masks.join("a.png"))
        .unwrap();
    let mut b = image::GrayImage::new(8, 8);
    b.put_pixel(3, 2, image::Luma([5]));
    b.put_pixel(4, 2, image::Luma([255]));
    b.save(masks.join("b.png")).unwrap();
    image::GrayImage::new(4, 4)
        .save(masks.join("c.png"))
        .unwrap();
    image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::new(8, 8)
        .save(masks.join("d.png"))
        .unwrap();
    let got = read_seg(root, "train", ReadOptions::STRICT).unwrap();
    let ex = &got.examples.examples;
    assert_eq!(ex.len(), 4);
    let msg = |i: usize| err(ex[i].load(2)).to_string();
    assert_eq!(
        msg(0),
        format!(
            "{}: image: a mask must be 8-bit greyscale, found Rgb8",
            masks.join("a.png").display()
        )
    );
    assert_eq!(
        msg(1),
        format!(
            "{}: image: pixel (3, 2) has value 5: not a class index (0..2) nor 255 (ignore)",
            masks.join("b.png").display()
        )
    );
    assert_eq!(
        msg(2),
        format!(
            "{}: image: mask is 4x4 but image {} is 8x8",
            masks.join("c.png").display(),
            images.join("c.png").display()
        )
    );
    assert_eq!(
        msg(3),
        format!(
            "{}: image: a mask must be 8-bit greyscale, found L16",
            masks.join("d.png").display()
        )
    );

    // A JPEG mask is rejected even with a .png name.
    std::fs::copy(
        fx().join("segmentation/train/images/s1.jpg"),
        masks.join("a.png"),
    )
    .unwrap();
    assert!(msg(0).ends_with("image: a mask must be a PNG file, found Some(Jpeg)"));

    // An image without a mask, a mask without an image.
    std::fs::remove_file(masks.join("b.png")).unwrap();
    std::fs::write(masks.join("z.png"), "").unwrap();
    let e = err(read_seg(root, "train", ReadOptions::STRICT));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: record mask `z.png`: no image `z.*` in {}",
            masks.join("z.png").display(),
            images.display()
        )
    );
    std::fs::remove_file(masks.join("z.png")).unwrap();
    let e = err(read_seg(root, "train", ReadOptions::STRICT));
    assert!(matches!(e, DataError::MissingImage { .. }));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: record image `b`: image {} does not exist",
            images.join("b.png").display(),
            masks.join("b.png").display()
        )
    );
    let got = read_seg(root, "train", ReadOptions::SKIP_BAD).unwrap();
    assert_eq!(got.examples.examples.len(), 3);
    assert_eq!(got.skipped_count(SkipKind::MissingImage), 1);

    // classes.txt problems.
    std::fs::write(root.join("classes.txt"), "a\n\nb\n").unwrap();
    assert!(
        err(read_classes(&root.join("classes.txt")))
            .to_string()
            .ends_with("record line 2: empty class name")
    );
    std::fs::write(root.join("classes.txt"), "a\nb\na\n").unwrap();
    assert!(
        err(read_classes(&root.join("classes.txt")))
            .to_string()
            .ends_with("record line 3: class `a` repeats line 1")
    );
}

#[test]
fn segmentation_empty_split() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::write(root.join("classes.txt"), "background\n").unwrap();
    std::fs::create_dir_all(root.join("val/images")).unwrap();
    std::fs::create_dir_all(root.join("val/masks")).unwrap();
    let e = err(read_seg(root, "val", ReadOptions::STRICT));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: split `val` is empty",
            root.join("val/images").display()
        )
    );
}
