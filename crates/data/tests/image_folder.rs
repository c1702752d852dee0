#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The image folder reader against the fixtures written by `datasets/fixtures/make_fixtures.py`
//! (exact official formats, tiny), and every bad-input case against small files written here.

mod common;

use common::{err, fx, strings};
use mmerge_data::DataError;
use mmerge_data::formats::ReadOptions;
use mmerge_data::formats::image_folder::{ImageExample, ImageFolderOptions, read_image_folder};
use mmerge_data::image::ImageRef;

#[test]
fn image_folder_reads_to_expected() {
    let d = fx().join("image_folder/train");
    let got = read_image_folder(&d, &ImageFolderOptions::default()).unwrap();
    assert!(got.skipped.is_empty());
    let ex = |f: &str, label| ImageExample {
        image: ImageRef::new(d.join(f)),
        label,
    };
    assert_eq!(got.examples.classes, ["cat", "dog"]);
    // Byte order: upper case before lower case.
    assert_eq!(
        got.examples.examples,
        vec![
            ex("cat/D.PNG", 0),
            ex("cat/a.png", 0),
            ex("cat/b.jpg", 0),
            ex("cat/c.jpeg", 0),
            ex("dog/x.png", 1),
            ex("dog/y.jpg", 1),
        ]
    );
    for e in &got.examples.examples {
        assert_eq!(e.image.load_rgb().unwrap().dimensions(), (8, 8));
    }
    // The script's JPEG of (30, 160, 60) decodes to about that colour.
    let px = got.examples.examples[2].image.load_rgb().unwrap()[(3, 3)];
    for (c, want) in px.0.iter().zip([30, 160, 60]) {
        assert!((i32::from(*c) - want).abs() <= 3, "{px:?}");
    }

    // A given class list sets the label order.
    let opts = ImageFolderOptions {
        classes: Some(strings(&["dog", "cat"])),
        ..Default::default()
    };
    let d = fx().join("image_folder/val");
    let got = read_image_folder(&d, &opts).unwrap();
    assert_eq!(got.examples.classes, ["dog", "cat"]);
    assert_eq!(
        got.examples.examples,
        vec![
            ImageExample {
                image: ImageRef::new(d.join("dog/v2.png")),
                label: 0
            },
            ImageExample {
                image: ImageRef::new(d.join("cat/v1.png")),
                label: 1
            },
        ]
    );
}

#[test]
fn image_folder_empty_class_and_split() {
    let d = fx().join("image_folder/val");
    let mut opts = ImageFolderOptions {
        classes: Some(strings(&["cat", "dog", "fish"])),
        ..Default::default()
    };
    assert_eq!(
        err(read_image_folder(&d, &opts)).to_string(),
        format!(
            "{}: record class `fish`: has no images (allow_empty_class is off)",
            d.join("fish").display()
        )
    );
    opts.allow_empty_class = true;
    let got = read_image_folder(&d, &opts).unwrap();
    assert_eq!(got.examples.classes, ["cat", "dog", "fish"]);
    assert_eq!(got.examples.examples.len(), 2);

    // A class folder that is not in the given list.
    opts.classes = Some(strings(&["cat"]));
    assert!(
        err(read_image_folder(&d, &opts))
            .to_string()
            .ends_with(r#"record class folder `dog`: not one of the given classes ["cat"]"#)
    );

    let tmp = tempfile::tempdir().unwrap();
    let split = tmp.path().join("train");
    std::fs::create_dir_all(split.join("cat")).unwrap();
    let e = err(read_image_folder(&split, &ImageFolderOptions::default()));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: record class `cat`: has no images (allow_empty_class is off)",
            split.join("cat").display()
        )
    );
    let opts = ImageFolderOptions {
        allow_empty_class: true,
        ..Default::default()
    };
    let e = err(read_image_folder(&split, &opts));
    assert!(matches!(e, DataError::EmptySplit { .. }));
    assert_eq!(
        e.to_string(),
        format!("{}: split `train` is empty", split.display())
    );
}

#[test]
fn image_folder_non_images_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let split = tmp.path().join("train");
    std::fs::create_dir_all(split.join("cat")).unwrap();
    std::fs::copy(
        fx().join("image_folder/train/cat/a.png"),
        split.join("cat/a.png"),
    )
    .unwrap();
    std::fs::write(split.join("cat/notes.txt"), "x").unwrap();
    std::fs::write(split.join("cat/.DS_Store"), "x").unwrap();
    std::fs::write(split.join("README"), "x").unwrap();
    let e = err(read_image_folder(&split, &ImageFolderOptions::default()));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: record file `README`: not in a class folder of {}",
            split.join("README").display(),
            split.display()
        )
    );
    let opts = ImageFolderOptions {
        read: ReadOptions::SKIP_BAD,
        ..Default::default()
    };
    let got = read_image_folder(&split, &opts).unwrap();
    assert_eq!(got.examples.examples.len(), 1);
    // Hidden files are not records; the other two are listed.
    let recs: Vec<&str> = got.skipped.iter().map(|s| s.record.as_str()).collect();
    assert_eq!(recs, ["file `README`", "file `cat/notes.txt`"]);
}
