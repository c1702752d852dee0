#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Tokenisation, image transforms and the batch loader.

use std::sync::Arc;

use image::RgbImage;
use mmerge_data::batch::{Loader, LoaderConfig};
use mmerge_data::tokenize::{Padding, Tokenizer};
use mmerge_data::transform::{self, Augment, ImageTransform, Normalize};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const CORPUS: &[&str] = &[
    "a red circle left of a blue square",
    "a small green triangle above a large red circle",
    "there are two shapes",
    "a blue square and a green triangle",
    "the red circle is below the blue square",
];

fn trained() -> Tokenizer {
    Tokenizer::train_wordpiece(CORPUS.iter().cycle().take(50), 200, 1).unwrap()
}

#[test]
fn trained_wordpiece_is_deterministic_and_bert_shaped() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a.json"), tmp.path().join("b.json"));
    trained().save(&a).unwrap();
    trained().save(&b).unwrap();
    let (ja, jb) = (
        std::fs::read_to_string(&a).unwrap(),
        std::fs::read_to_string(&b).unwrap(),
    );
    assert!(ja == jb, "two trainings on the same text differ");
    let tok = Tokenizer::load(&a).unwrap();
    for (i, t) in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .enumerate()
    {
        assert_eq!(tok.token_id(t), Some(i as u32), "{t}");
    }
    assert_eq!(
        tok.tokens("A Red circle!").unwrap(),
        ["[CLS]", "a", "red", "circle", "[UNK]", "[SEP]"]
    );
    // An unseen word is cut into learned sub-words ("##are" from "square"), and one with an
    // unseen character becomes [UNK].
    assert_eq!(
        tok.tokens("bare").unwrap(),
        ["[CLS]", "b", "##are", "[SEP]"]
    );
    assert_eq!(tok.tokens("zebra").unwrap(), ["[CLS]", "[UNK]", "[SEP]"]);
    // A small vocabulary stops merging at its size: frequent words are whole, rarer ones in
    // pieces.
    let small = Tokenizer::train_wordpiece(CORPUS.iter(), 51, 1).unwrap();
    assert_eq!(small.vocab_size(), 51);
    let red = small.tokens("red").unwrap();
    let above = small.tokens("above").unwrap();
    assert_eq!(red, ["[CLS]", "red", "[SEP]"]);
    assert!(above.len() > 3, "{above:?}");
    assert!(Tokenizer::train_wordpiece(CORPUS.iter(), 10, 1).is_err());
}

#[test]
fn batches_pad_to_longest_or_fixed_and_truncate_keeping_sep() {
    let tok = trained();
    let (cls, sep, pad) = (
        i64::from(tok.token_id("[CLS]").unwrap()),
        i64::from(tok.token_id("[SEP]").unwrap()),
        i64::from(tok.pad_id()),
    );
    let b = tok
        .encode_batch(
            &["red", "a red circle left of a blue square"],
            6,
            Padding::Longest,
        )
        .unwrap();
    assert_eq!((b.batch, b.len, b.truncated), (2, 6, 1));
    assert_eq!(b.mask, [1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1]);
    let red = i64::from(tok.token_id("red").unwrap());
    assert_eq!(&b.ids[..6], &[cls, red, sep, pad, pad, pad]);
    assert_eq!(
        (b.ids[6], b.ids[11]),
        (cls, sep),
        "truncation keeps [CLS] … [SEP]"
    );
    let f = tok.encode_batch(&["red"], 4, Padding::Fixed(8)).unwrap();
    assert_eq!((f.len, f.ids.len()), (8, 8));
    assert_eq!(f.mask, [1, 1, 1, 0, 0, 0, 0, 0]);
    let err = tok
        .encode_batch(&["red"], 9, Padding::Fixed(8))
        .unwrap_err();
    assert!(
        matches!(err, mmerge_data::DataError::OutOfRange { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "padding to fixed length 8: must be at least max_len 9"
    );
}

#[test]
fn minilm_tokenizer_json_loads_without_its_fixed_padding() {
    let path = mmerge_testkit::require_fetched("all-MiniLM-L6-v2", "tokenizer.json")
        .join("tokenizer.json");
    let tok = Tokenizer::load(&path).unwrap();
    assert_eq!(tok.vocab_size(), 30522);
    // bert-base-uncased ids of "A man is eating food.".
    let b = tok
        .encode_batch(&["A man is eating food."], 128, Padding::Longest)
        .unwrap();
    assert_eq!(b.ids, [101, 1037, 2158, 2003, 5983, 2833, 1012, 102]);
}

fn checker(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 17 % 256) as u8,
            (y * 29 % 256) as u8,
            ((x + y) % 2 * 255) as u8,
        ])
    })
}

#[test]
fn to_chw_normalises_each_channel() {
    let img = RgbImage::from_fn(2, 1, |x, _| {
        image::Rgb([if x == 0 { 0 } else { 255 }, 51, 102])
    });
    let v = transform::to_chw(&img, &Normalize::HALF);
    let want = [
        -1.0,
        1.0,
        0.2 * 2.0 - 1.0,
        0.2 * 2.0 - 1.0,
        0.4 * 2.0 - 1.0,
        0.4 * 2.0 - 1.0,
    ];
    for (a, b) in v.iter().zip(want) {
        assert!((a - b).abs() < 1e-6, "{v:?}");
    }
}

#[test]
fn patchify_matches_index_formula() {
    let (c, h, w, p) = (3, 4, 6, 2);
    let chw: Vec<f32> = (0..c * h * w).map(|i| i as f32).collect();
    let out = transform::patchify(&chw, c, h, w, p).unwrap();
    let per = c * p * p;
    for n in 0..(h / p) * (w / p) {
        let (py, px) = (n / (w / p), n % (w / p));
        for k in 0..per {
            let (ch, dy, dx) = (k / (p * p), k % (p * p) / p, k % p);
            let src = ch * h * w + (py * p + dy) * w + px * p + dx;
            assert_eq!(out[n * per + k], src as f32, "patch {n} element {k}");
        }
    }
    assert!(transform::patchify(&chw, c, h, w, 4).is_err());
}

#[test]
fn crop_box_always_fits_and_transform_is_seeded() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for (w, h) in [(32, 32), (100, 7), (7, 100), (1, 1)] {
        for _ in 0..200 {
            let (x, y, cw, ch) =
                transform::crop_box(w, h, (0.08, 1.0), (0.75, 4.0 / 3.0), &mut rng);
            assert!(
                cw >= 1 && ch >= 1 && x + cw <= w && y + ch <= h,
                "{w}x{h}: {x},{y},{cw},{ch}"
            );
        }
    }
    let t = ImageTransform {
        size: 16,
        normalize: Normalize::IMAGENET,
        augment: Some(Augment {
            hflip: true,
            ..Default::default()
        }),
    };
    let img = checker(40, 30);
    let a = t.apply(&img, &mut ChaCha8Rng::seed_from_u64(9)).unwrap();
    let b = t.apply(&img, &mut ChaCha8Rng::seed_from_u64(9)).unwrap();
    let c = t.apply(&img, &mut ChaCha8Rng::seed_from_u64(10)).unwrap();
    assert_eq!(a.len(), 3 * 16 * 16);
    assert_eq!(a, b);
    assert_ne!(a, c);
    let plain = ImageTransform { augment: None, ..t };
    let resized = transform::resize(&img, 16);
    assert_eq!(
        plain
            .apply(&img, &mut ChaCha8Rng::seed_from_u64(0))
            .unwrap(),
        transform::to_chw(&resized, &Normalize::IMAGENET)
    );
}

#[test]
fn loader_is_deterministic_across_threads_and_covers_every_item() {
    let run = |threads: usize, prefetch: usize| {
        let load = Arc::new(|x: &u32, rng: &mut ChaCha8Rng| {
            use rand::Rng;
            Ok((*x, rng.random::<u32>()))
        });
        let cfg = LoaderConfig {
            batch_size: 7,
            seed: 5,
            shuffle: true,
            drop_last: false,
            prefetch,
        };
        let l = Loader::new((0..50u32).collect(), load, cfg, Some(threads)).unwrap();
        assert_eq!(l.batches_per_epoch(), 8);
        (0..2)
            .map(|e| l.epoch(e).map(|b| b.unwrap().examples).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    };
    let a = run(1, 0);
    assert_eq!(a, run(3, 2));
    assert_ne!(a[0], a[1], "epochs are shuffled differently");
    let mut seen: Vec<u32> = a[0].iter().flatten().map(|e| e.0).collect();
    assert_ne!(seen, (0..50).collect::<Vec<_>>(), "shuffled");
    seen.sort();
    assert_eq!(seen, (0..50).collect::<Vec<_>>());
    assert_eq!(a[0].last().unwrap().len(), 1, "last partial batch kept");
}

#[test]
fn an_epoch_resumed_at_batch_k_gives_the_same_batches_from_k() {
    let load = Arc::new(|x: &u32, rng: &mut ChaCha8Rng| {
        use rand::Rng;
        Ok((*x, rng.random::<u32>()))
    });
    let cfg = LoaderConfig {
        batch_size: 7,
        seed: 9,
        shuffle: true,
        drop_last: false,
        prefetch: 1,
    };
    let l = Loader::new((0..50u32).collect(), load, cfg, Some(2)).unwrap();
    let whole: Vec<_> = l.epoch(3).map(|b| b.unwrap()).collect();
    for k in [0, 1, 5, 7, 8] {
        let rest: Vec<_> = l.epoch_from(3, k).map(|b| b.unwrap()).collect();
        assert_eq!(rest, whole[k.min(whole.len())..], "from batch {k}");
    }
}

#[test]
fn loader_stops_at_the_first_error_and_can_be_dropped_early() {
    let load = Arc::new(|x: &u32, _: &mut ChaCha8Rng| {
        if *x == 9 {
            Err(mmerge_data::DataError::BadRecord {
                path: "items".into(),
                record: format!("item {x}"),
                reason: "bad".into(),
            })
        } else {
            Ok(*x)
        }
    });
    let cfg = LoaderConfig {
        batch_size: 4,
        seed: 0,
        shuffle: false,
        drop_last: true,
        prefetch: 1,
    };
    let l = Loader::new((0..20u32).collect(), load, cfg, Some(2)).unwrap();
    let got: Vec<_> = l.epoch(0).collect();
    assert_eq!(
        got.len(),
        3,
        "two good batches, then the error, then nothing"
    );
    assert!(got[2].as_ref().unwrap_err().to_string().contains("item 9"));
    let mut it = l.epoch(1);
    assert_eq!(it.next().unwrap().unwrap().examples, vec![0, 1, 2, 3]);
    drop(it); // must not hang with the producer blocked on a full queue
}

#[test]
fn a_panicking_load_function_is_an_error_not_a_short_epoch() {
    let load = Arc::new(|x: &u32, _: &mut ChaCha8Rng| {
        assert!(*x != 5, "item five is broken");
        Ok(*x)
    });
    let cfg = LoaderConfig {
        batch_size: 2,
        seed: 0,
        shuffle: false,
        drop_last: false,
        prefetch: 0,
    };
    let l = Loader::new((0..10u32).collect(), load, cfg, Some(1)).unwrap();
    let got: Vec<_> = l.epoch(0).collect();
    assert_eq!(got.len(), 3, "batches [0,1], [2,3], then the error");
    let err = got[2].as_ref().unwrap_err().to_string();
    assert!(
        err.contains("panicked") && err.contains("item five is broken"),
        "{err}"
    );
}
