#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The captions (Karpathy, COCO) reader against the fixtures written by `datasets/fixtures/make_fixtures.py`
//! (exact official formats, tiny), and every bad-input case against small files written here.

mod common;

use std::path::Path;

use common::{coco_karpathy, err, fx, strings};
use mmerge_data::formats::captions::{
    CocoCaptionsFile, EquivalentGroup, KarpathyFile, KarpathySource, KarpathySplit, RetrievalSplit,
    caption_key, read_coco_captions, read_equivalent, write_equivalent,
};
use mmerge_data::formats::{ReadOptions, SkipKind, read_json, write_json};
use mmerge_data::image::ImageRef;

#[test]
fn karpathy_coco_split_counts() {
    use KarpathySplit::*;
    // (split, fold restval, image ids) — the fixture has 2 train, 1 restval, 1 val, 3 test.
    let cases: [(KarpathySplit, bool, &[u64]); 6] = [
        (Train, false, &[5, 6]),
        (Train, true, &[4, 5, 6]),
        (Restval, false, &[4]),
        (Val, false, &[3]),
        (Val, true, &[3]),
        (Test, false, &[0, 1, 2]),
    ];
    for (split, fold, ids) in cases {
        let got = coco_karpathy(split, fold)
            .read(ReadOptions::STRICT)
            .unwrap();
        assert_eq!(got.examples.image_ids, ids, "{split:?} fold={fold}");
        assert_eq!(got.examples.captions.len(), 2 * ids.len());
    }
    let train = coco_karpathy(Train, true)
        .read(ReadOptions::STRICT)
        .unwrap()
        .examples;
    assert_eq!(
        train.images[0],
        ImageRef::new(fx().join("captions/coco/val2014/COCO_val2014_000000554625.jpg"))
    );
    assert_eq!(
        train.images[1],
        ImageRef::new(fx().join("captions/coco/train2014/COCO_train2014_000000000009.jpg"))
    );
    assert_eq!("restval".parse::<KarpathySplit>().unwrap(), Restval);
    assert!("dev".parse::<KarpathySplit>().is_err());
}

fn coco_test_expected(root: &Path, ids: Vec<u64>) -> RetrievalSplit {
    let img = |n: &str| ImageRef::new(root.join(format!("COCO_val2014_000000{n}.jpg")));
    RetrievalSplit {
        images: vec![img("391895"), img("522418"), img("184613")],
        image_ids: ids,
        captions: strings(&[
            "A man with a red helmet on a small moped on a dirt road.",
            "Man riding a motor bike on a dirt road on the countryside.",
            "A woman wearing a net on her head cutting a cake.",
            "A dog sitting on a couch.",
            "A child holding a flowered umbrella and petting a yak.",
            "a dog  sitting on a Couch.",
        ]),
        caption_image: vec![0, 0, 1, 1, 2, 2],
        // Captions 3 and 5 are the same after trimming, lower-casing and collapsing
        // whitespace: either image is a hit for both.
        equivalent: vec![vec![0], vec![0], vec![1], vec![1, 2], vec![2], vec![1, 2]],
    }
}

#[test]
fn karpathy_coco_test_split_reads_to_expected() {
    let got = coco_karpathy(KarpathySplit::Test, false)
        .read(ReadOptions::STRICT)
        .unwrap();
    assert!(got.skipped.is_empty());
    let want = coco_test_expected(&fx().join("captions/coco/val2014"), vec![0, 1, 2]);
    assert_eq!(got.examples, want);
    assert_eq!(
        got.examples.image_hits(),
        vec![vec![0, 1], vec![2, 3, 5], vec![3, 4, 5]]
    );
    assert_eq!(
        got.examples.images[2].load_rgb().unwrap().dimensions(),
        (8, 8)
    );
}

#[test]
fn karpathy_flickr30k() {
    let root = fx().join("captions/flickr30k-images");
    let src = |split| KarpathySource {
        file: fx().join("captions/dataset_flickr30k.json"),
        image_root: root.clone(),
        split,
        fold_restval: true,
    };
    let train = src(KarpathySplit::Train).read(ReadOptions::STRICT).unwrap();
    assert_eq!(train.examples.image_ids, [0, 1]);
    assert_eq!(
        train.examples.images,
        [
            ImageRef::new(root.join("1000092795.jpg")),
            ImageRef::new(root.join("10002456.jpg"))
        ]
    );
    assert_eq!(
        train.examples.captions[1],
        "Two young, White males are outside near many bushes."
    );
    assert_eq!(train.examples.caption_image, [0, 0, 1, 1]);
    let test = src(KarpathySplit::Test).read(ReadOptions::STRICT).unwrap();
    assert_eq!(test.examples.image_ids, [3]);
    // No restval in Flickr30k: an empty split.
    let e = err(src(KarpathySplit::Restval).read(ReadOptions::STRICT));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: split `restval` is empty",
            fx().join("captions/dataset_flickr30k.json").display()
        )
    );
}

#[test]
fn coco_captions_file() {
    let root = fx().join("captions/coco/val2014");
    let file = fx().join("captions/annotations/captions_val2014.json");
    let got = read_coco_captions(&file, &root, ReadOptions::STRICT).unwrap();
    // Captions regrouped by image (the file interleaves them); the same split as
    // Karpathy's test images, with COCO ids.
    assert_eq!(
        got.examples,
        coco_test_expected(&root, vec![391895, 522418, 184613])
    );

    // Round trip through the record types.
    let mut f: CocoCaptionsFile = read_json(&file).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("captions_val2014.json");
    write_json(&p, &f).unwrap();
    assert_eq!(
        read_coco_captions(&p, &root, ReadOptions::STRICT).unwrap(),
        got
    );

    // A caption of an unknown image.
    f.annotations[4].image_id = 5;
    write_json(&p, &f).unwrap();
    assert_eq!(
        err(read_coco_captions(&p, &root, ReadOptions::STRICT)).to_string(),
        format!(
            "{}: record annotation id 686718: image_id 5 is not among the images",
            p.display()
        )
    );
    let got = read_coco_captions(&p, &root, ReadOptions::SKIP_BAD).unwrap();
    assert_eq!(got.skipped_count(SkipKind::BadRecord), 1);
    assert_eq!(got.examples.captions.len(), 5);
    // Caption 5 now has no twin.
    assert_eq!(got.examples.equivalent[4], [2]);
}

#[test]
fn equivalent_captions_json() {
    let split = coco_karpathy(KarpathySplit::Test, false)
        .read(ReadOptions::STRICT)
        .unwrap()
        .examples;
    let groups = split.equivalent_groups();
    assert_eq!(
        groups,
        vec![EquivalentGroup {
            caption: "a dog sitting on a couch.".into(),
            images: vec![1, 2],
        }]
    );
    assert_eq!(caption_key("  A dog\t sitting  "), "a dog sitting");
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("equivalent_captions.json");
    write_equivalent(&p, &groups).unwrap();
    assert_eq!(
        std::fs::read_to_string(&p).unwrap(),
        "[\n  {\n    \"caption\": \"a dog sitting on a couch.\",\n    \"images\": [\n      1,\n      2\n    ]\n  }\n]\n"
    );
    assert_eq!(read_equivalent(&p).unwrap(), groups);
    std::fs::write(&p, r#"[{"caption": "x", "images": [3]}]"#).unwrap();
    assert_eq!(
        err(read_equivalent(&p)).to_string(),
        format!(
            "{}: record group 0 (`x`): needs two or more image ids, sorted and distinct",
            p.display()
        )
    );
    // No duplicates in the train split: no groups.
    let train = coco_karpathy(KarpathySplit::Train, true)
        .read(ReadOptions::STRICT)
        .unwrap()
        .examples;
    assert!(train.equivalent_groups().is_empty());
}

#[test]
fn karpathy_round_trip_through_the_record_types() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, root) in [
        ("dataset_coco.json", fx().join("captions/coco")),
        (
            "dataset_flickr30k.json",
            fx().join("captions/flickr30k-images"),
        ),
    ] {
        let file = fx().join("captions").join(name);
        let f: KarpathyFile = read_json(&file).unwrap();
        let copy = tmp.path().join(name);
        write_json(&copy, &f).unwrap();
        // Flickr30k entries keep having neither `filepath` nor `cocoid`.
        let text = std::fs::read_to_string(&copy).unwrap();
        assert_eq!(text.contains("\"filepath\""), name.contains("coco"));
        assert_eq!(text.contains("\"cocoid\""), name.contains("coco"));
        for split in [KarpathySplit::Train, KarpathySplit::Test] {
            let src = KarpathySource {
                file: file.clone(),
                image_root: root.clone(),
                split,
                fold_restval: true,
            };
            let back = KarpathySource {
                file: copy.clone(),
                ..src.clone()
            };
            assert_eq!(
                back.read(ReadOptions::STRICT).unwrap(),
                src.read(ReadOptions::STRICT).unwrap()
            );
        }
    }
}

#[test]
fn karpathy_bad_records() {
    let file = fx().join("captions/dataset_coco.json");
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("dataset.json");
    let src = KarpathySource {
        file: p.clone(),
        ..coco_karpathy(KarpathySplit::Test, false)
    };

    // A missing image.
    let mut f: KarpathyFile = read_json(&file).unwrap();
    f.images[1].filename = "COCO_val2014_000000000001.jpg".into();
    write_json(&p, &f).unwrap();
    let e = err(src.read(ReadOptions::STRICT));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: record imgid 1 (COCO_val2014_000000000001.jpg): image {} does not exist",
            p.display(),
            fx().join("captions/coco/val2014/COCO_val2014_000000000001.jpg")
                .display()
        )
    );
    let got = src.read(ReadOptions::SKIP_BAD).unwrap();
    assert_eq!(got.skipped_count(SkipKind::MissingImage), 1);
    assert_eq!(got.examples.image_ids, [0, 2]);
    // The duplicate's twin is gone: caption 3 (image 2's) is its own group again.
    assert_eq!(
        got.examples.equivalent,
        [vec![0], vec![0], vec![1], vec![1]]
    );

    // An unknown split name, even in a split not read.
    let mut f: KarpathyFile = read_json(&file).unwrap();
    f.images[6].split = "dev".into();
    write_json(&p, &f).unwrap();
    assert_eq!(
        err(src.read(ReadOptions::STRICT)).to_string(),
        format!(
            "{}: record imgid 6 (COCO_train2014_000000000025.jpg): split `dev`: expected train, restval, val or test",
            p.display()
        )
    );

    // sentids that disagree with the sentences; a duplicate imgid.
    let mut f: KarpathyFile = read_json(&file).unwrap();
    f.images[0].sentids = vec![0, 7];
    write_json(&p, &f).unwrap();
    assert!(err(src.read(ReadOptions::STRICT))
        .to_string()
        .ends_with("record imgid 0 (COCO_val2014_000000391895.jpg): sentids [0, 7] but the sentences' ids are [0, 1]"));
    let mut f: KarpathyFile = read_json(&file).unwrap();
    f.images[2].imgid = 1;
    write_json(&p, &f).unwrap();
    assert!(
        err(src.read(ReadOptions::SKIP_BAD))
            .to_string()
            .ends_with("imgid appears more than once")
    );
}
