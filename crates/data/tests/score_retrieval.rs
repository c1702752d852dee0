#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Retrieval recall@k from embeddings (`mmerge_data::score::embedding`): a hand-worked
//! gallery, a float64 full-matrix full-sort oracle on seeded random embeddings (exact ties,
//! duplicate rows, shared captions; chunk sizes and thread counts), the 5,000 × 25,000 case
//! with its time and peak memory, and the bad inputs.

use std::time::Instant;

use mmerge_core::hash::SplitMix64;
use mmerge_data::formats::captions::RetrievalSplit;
use mmerge_data::image::ImageRef;
use mmerge_data::score::{
    EmbeddingRetrieval, RECALL_KS, RetrievalRanks, Similarity, embedding_ranks, embedding_recall,
    image_to_text_ranks, text_to_image_ranks,
};

fn split(captions: &[String], owner: &[usize], n_images: usize) -> RetrievalSplit {
    RetrievalSplit::new(
        (0..n_images)
            .map(|i| ImageRef::new(format!("{i}.png")))
            .collect(),
        (0..n_images as u64).collect(),
        captions.to_vec(),
        owner.to_vec(),
    )
    .unwrap()
}

fn opts(similarity: Similarity, chunk: usize) -> EmbeddingRetrieval {
    EmbeddingRetrieval { similarity, chunk }
}

/// 3 images, 4 captions; "a dog" is the caption of images 0 and 2.
fn hand_split() -> RetrievalSplit {
    let caps: Vec<String> = ["a dog", "a cat", "A dog", "grass"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    split(&caps, &[0, 1, 2, 2], 3)
}

#[test]
fn hand_worked_gallery_in_both_directions() {
    let s = hand_split();
    // Hits: c0 {i0, i2}, c1 {i1}, c2 {i0, i2}, c3 {i2}; i0 {c0, c2}, i1 {c1}, i2 {c0, c2, c3}.
    assert_eq!(s.equivalent, [vec![0, 2], vec![1], vec![0, 2], vec![2]]);
    let images = [1.0, 0.0, /* i1 */ 0.0, 1.0, /* i2 */ 1.0, 1.0];
    let texts = [
        2.0, 1.0, /* c1 */ 1.0, 0.0, /* c2 */ 0.0, 1.0, /* c3 */ 1.0, 1.0,
    ];
    // Dot, s(c, i):   i0 i1 i2
    //   c0 (2,1)       2  1  3   hits {0,2}: best 3        → rank 0
    //   c1 (1,0)       1  0  1   hit  {1}:   best 0, i0 i2 → 2
    //   c2 (0,1)       0  1  1   hits {0,2}: best 1, i1 ties → 1 (ties count against)
    //   c3 (1,1)       1  1  2   hit  {2}:   best 2        → 0
    // Image → text: i0 {c0,c2} best 2, c1 c3 = 1 → 0; i1 {c1} best 0, three others ≥ 0 → 3;
    // i2 {c0,c2,c3} best 3, c1 = 1 → 0.
    let dot = embedding_ranks(&s, &images, &texts, 2, opts(Similarity::Dot, 3)).unwrap();
    let want_dot = RetrievalRanks {
        text_to_image: vec![0, 2, 1, 0],
        image_to_text: vec![0, 3, 0],
    };
    assert_eq!(dot, want_dot);
    // The full-matrix path on the same similarities (images × captions) agrees.
    let matrix = [2.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 3.0, 1.0, 1.0, 2.0];
    assert_eq!(text_to_image_ranks(&s, &matrix).unwrap(), [0, 2, 1, 0]);
    assert_eq!(image_to_text_ranks(&s, &matrix).unwrap(), [0, 3, 0]);
    let r = dot.recall(&[1, 2, 5]);
    assert_eq!(r.text_to_image, [0.5, 0.75, 1.0]);
    assert_eq!(r.image_to_text, [2.0 / 3.0, 2.0 / 3.0, 1.0]);

    // Cosine: i2 → (1,1)/√2, c0 → (2,1)/√5, c3 → (1,1)/√2.
    //   c0: .894 .447 .949 → 0;  c1: 1 0 .707 → 2;  c2: 0 1 .707 → 1;  c3: .707 .707 1 → 0.
    // i0: c0 .894 (best hit), c1 1 above it → 1 (dot gave 0: the norm of c0 matters here);
    // i1: best hit c1 = 0 → 3;  i2: best hit c3 = 1 → 0.
    let cos = embedding_ranks(&s, &images, &texts, 2, EmbeddingRetrieval::default()).unwrap();
    assert_eq!(cos.text_to_image, [0, 2, 1, 0]);
    assert_eq!(cos.image_to_text, [1, 3, 0]);
    let r = embedding_recall(&s, &images, &texts, 2, EmbeddingRetrieval::default()).unwrap();
    assert_eq!(r.ks, RECALL_KS);
    assert_eq!(r.text_to_image, [0.5, 1.0, 1.0]);
    assert_eq!(r.image_to_text, [1.0 / 3.0, 1.0, 1.0]);

    // A collapsed model (every embedding equal): each rank is the number of non-hits.
    let ones = [1.0f32; 8];
    let flat = embedding_ranks(&s, &ones[..6], &ones, 2, opts(Similarity::Dot, 1)).unwrap();
    assert_eq!(flat.text_to_image, [1, 2, 1, 2]);
    assert_eq!(flat.image_to_text, [2, 3, 1]);
    assert_eq!(flat.recall(&[1]).text_to_image, [0.0]);
}

#[test]
fn bad_inputs_are_named() {
    let s = hand_split();
    let (img, txt) = ([1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0], [1.0f32; 8]);
    let msg = |i: &[f32], t: &[f32], o: EmbeddingRetrieval| {
        embedding_ranks(&s, i, t, 2, o).unwrap_err().to_string()
    };
    let cos = EmbeddingRetrieval::default();
    assert_eq!(
        msg(&img[..5], &txt, cos),
        "image embeddings: 5 values, expected 3 rows × 2 = 6"
    );
    assert_eq!(
        msg(&img, &txt[..6], cos),
        "text embeddings: 6 values, expected 4 rows × 2 = 8"
    );
    let mut nan = txt;
    nan[5] = f32::NAN;
    assert_eq!(
        msg(&img, &nan, cos),
        "text embeddings: row 2, column 1 is NaN: finite values"
    );
    let mut zero = img;
    zero[2] = 0.0;
    zero[3] = 0.0;
    assert_eq!(
        msg(&zero, &txt, cos),
        "image embeddings: row 1 is zero: non-zero rows for cosine similarity"
    );
    // The same zero row is fine for dot.
    assert!(embedding_ranks(&s, &zero, &txt, 2, opts(Similarity::Dot, 1)).is_ok());
    // Norms √2·10¹⁹ on both sides: a product of 2·10³⁸ could overflow f32.
    let huge = [1e19f32; 8];
    let e = msg(&huge[..6], &huge, opts(Similarity::Dot, 1));
    assert!(
        e.starts_with("dot similarity of image norms up to 1.414"),
        "{e}"
    );
    assert!(e.ends_with("products of norms up to 1e37 (beyond, f32 dot products can overflow)"));
    assert_eq!(
        msg(&img, &txt, opts(Similarity::Dot, 0)),
        "retrieval: embedding dimension 2, chunk 0: both must be at least 1"
    );
    let mut broken = s.clone();
    broken.equivalent[1] = vec![];
    assert_eq!(
        embedding_ranks(&broken, &img, &txt, 2, cos)
            .unwrap_err()
            .to_string(),
        "retrieval split: caption 1 has no hit image"
    );
    broken.equivalent[1] = vec![3];
    assert_eq!(
        embedding_ranks(&broken, &img, &txt, 2, cos)
            .unwrap_err()
            .to_string(),
        "retrieval split: caption 1 has hit image 3 of 3"
    );
}

// ---------------------------------------------------------------------------------------
// The float64 oracle and seeded random galleries
// ---------------------------------------------------------------------------------------

/// Ranks by the definition: the full f64 similarity matrix, each query's gallery sorted by
/// descending similarity with non-hits before hits among equals (ties count against the
/// query), the rank being the position of the first hit. Also returns how many queries had
/// their best hit tied with a non-hit.
fn oracle(
    s: &RetrievalSplit,
    images: &[f32],
    texts: &[f32],
    dim: usize,
    sim: Similarity,
) -> (RetrievalRanks, usize) {
    let rows = |x: &[f32]| -> Vec<Vec<f64>> {
        x.chunks(dim)
            .map(|r| {
                let v: Vec<f64> = r.iter().map(|&a| f64::from(a)).collect();
                let n = v.iter().map(|a| a * a).sum::<f64>().sqrt();
                match sim {
                    Similarity::Cosine => v.iter().map(|a| a / n).collect(),
                    Similarity::Dot => v,
                }
            })
            .collect()
    };
    let (im, tx) = (rows(images), rows(texts));
    let m: Vec<Vec<f64>> = tx
        .iter()
        .map(|t| {
            im.iter()
                .map(|i| t.iter().zip(i).map(|(a, b)| a * b).sum())
                .collect()
        })
        .collect();
    let mut tied = 0;
    let mut rank = |n: usize, score: &dyn Fn(usize) -> f64, hits: &[usize]| -> usize {
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| {
            score(b)
                .partial_cmp(&score(a))
                .unwrap()
                .then(hits.contains(&a).cmp(&hits.contains(&b)))
        });
        let r = order.iter().position(|g| hits.contains(g)).unwrap();
        let best = score(order[r]);
        tied += usize::from(r > 0 && score(order[r - 1]) == best);
        r
    };
    let text_to_image = (0..tx.len())
        .map(|t| rank(im.len(), &|i| m[t][i], &s.equivalent[t]))
        .collect();
    let image_hits = s.image_hits();
    let image_to_text = (0..im.len())
        .map(|i| rank(tx.len(), &|t| m[t][i], &image_hits[i]))
        .collect();
    (
        RetrievalRanks {
            text_to_image,
            image_to_text,
        },
        tied,
    )
}

/// A gallery of `n_i` images and `n_t` captions drawn from `vocab` strings (so many are
/// shared), image i owning caption i and the rest owned at random.
fn random_split(rng: &mut SplitMix64, n_i: usize, n_t: usize, vocab: u64) -> RetrievalSplit {
    let caps: Vec<String> = (0..n_t)
        .map(|_| format!("caption {}", rng.next_u64() % vocab))
        .collect();
    let owner: Vec<usize> = (0..n_t)
        .map(|t| {
            if t < n_i {
                t
            } else {
                (rng.next_u64() % n_i as u64) as usize
            }
        })
        .collect();
    split(&caps, &owner, n_i)
}

/// `rows` × `dim` embeddings on which f32 and f64 arithmetic are both exact, for either
/// similarity: a row has 1, 4 or 16 (when `dim` allows) non-zero entries ±m for a row scale
/// m in 1..=7, so its norm is m·√k = m, 2m or 4m and its normalised entries ±1, ±½, ±¼;
/// every dot product is a multiple of 1/16 in a short range. A fifth of the rows copy an
/// earlier row exactly (duplicate embeddings), and scales make distinct rows tie in cosine.
fn exact_rows(rng: &mut SplitMix64, rows: usize, dim: usize) -> Vec<f32> {
    let mut x = vec![0f32; rows * dim];
    for r in 0..rows {
        if r > 0 && rng.next_u64().is_multiple_of(5) {
            let src = (rng.next_u64() % r as u64) as usize;
            x.copy_within(src * dim..(src + 1) * dim, r * dim);
            continue;
        }
        let ks: &[usize] = if dim >= 16 { &[1, 4, 16] } else { &[1, 4] };
        let k = ks[(rng.next_u64() % ks.len() as u64) as usize];
        let m = (1 + rng.next_u64() % 7) as f32;
        let mut cols: Vec<usize> = (0..dim).collect();
        for j in 0..k {
            let pick = j + (rng.next_u64() % (dim - j) as u64) as usize;
            cols.swap(j, pick);
            let sign = if rng.next_u64().is_multiple_of(2) {
                1.0
            } else {
                -1.0
            };
            x[r * dim + cols[j]] = sign * m;
        }
    }
    x
}

#[test]
fn chunked_ranks_equal_the_f64_oracle_with_ties_and_shared_captions() {
    let (mut tied, mut shared) = (0, 0);
    for seed in 0..12u64 {
        let mut rng = SplitMix64::new(seed);
        let (n_i, n_t) = (10 + (seed as usize % 4) * 9, 70);
        let dim = [4, 16, 12][seed as usize % 3];
        let s = random_split(&mut rng, n_i, n_t, 40);
        shared += s.equivalent.iter().filter(|h| h.len() > 1).count();
        let images = exact_rows(&mut rng, n_i, dim);
        let texts = exact_rows(&mut rng, n_t, dim);
        for sim in [Similarity::Cosine, Similarity::Dot] {
            let (want, t) = oracle(&s, &images, &texts, dim, sim);
            tied += t;
            for chunk in [1, 3, 256] {
                let got = embedding_ranks(&s, &images, &texts, dim, opts(sim, chunk)).unwrap();
                assert_eq!(got, want, "seed {seed}, {sim:?}, chunk {chunk}");
            }
        }
    }
    // The cases the rule is about did occur, many times.
    assert!(tied > 100, "{tied} queries with a tied best hit");
    assert!(shared > 100, "{shared} captions with a shared text");
}

#[test]
fn any_thread_count_and_chunk_give_the_same_ranks() {
    // General (non-dyadic) embeddings: the result depends on neither the schedule nor the
    // chunking, as each similarity has one f32 value and counts are integers.
    let mut rng = SplitMix64::new(7);
    let (n_i, n_t, dim) = (150, 700, 40);
    let s = random_split(&mut rng, n_i, n_t, 600);
    let images: Vec<f32> = (0..n_i * dim).map(|_| rng.signed_unit_f32()).collect();
    let texts: Vec<f32> = (0..n_t * dim).map(|_| rng.signed_unit_f32()).collect();
    let run = |threads: usize, chunk: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                embedding_ranks(&s, &images, &texts, dim, opts(Similarity::Cosine, chunk)).unwrap()
            })
    };
    let one = run(1, 256);
    for (threads, chunk) in [(1, 1), (2, 3), (3, 7), (4, 256), (3, 700)] {
        assert_eq!(run(threads, chunk), one, "{threads} threads, chunk {chunk}");
    }
    // Well above chance: with random embeddings R@10 is about 10 / 150.
    assert!(one.recall(&[10]).text_to_image[0] < 0.2);
}

/// The process's peak resident memory in bytes (Linux `VmHWM`).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[test]
fn five_thousand_images_by_twenty_five_thousand_captions() {
    // COCO 5k test size: 5 captions per image, every 50th caption shared among 7 texts.
    let (n_i, n_t, dim) = (5_000, 25_000, 16);
    let mut rng = SplitMix64::new(2026);
    let caps: Vec<String> = (0..n_t)
        .map(|t| {
            if t % 50 == 0 {
                format!("shared {}", t % 7)
            } else {
                format!("caption {t}")
            }
        })
        .collect();
    let owner: Vec<usize> = (0..n_t).map(|t| t % n_i).collect();
    let s = split(&caps, &owner, n_i);
    let images = exact_rows(&mut rng, n_i, dim);
    // Three captions in five point exactly along their image (a scaled copy of its row,
    // cosine 1 but tied with the image's duplicates), the others anywhere: all exact rows.
    let mut texts = Vec::with_capacity(n_t * dim);
    for &i in &owner {
        if rng.next_u64() % 5 < 3 {
            let m = (1 + rng.next_u64() % 3) as f32;
            texts.extend(images[i * dim..(i + 1) * dim].iter().map(|v| v * m));
        } else {
            texts.extend(exact_rows(&mut rng, 1, dim));
        }
    }
    let start = Instant::now();
    let got = embedding_ranks(&s, &images, &texts, dim, EmbeddingRetrieval::default()).unwrap();
    let secs = start.elapsed().as_secs_f64();
    let r = got.recall(&RECALL_KS);
    eprintln!(
        "5000 × 25000, d = 16, cosine, {} threads: {secs:.2} s; R@1/5/10 t→i {:?}, i→t {:?}; peak RSS {} MB",
        rayon::current_num_threads(),
        r.text_to_image,
        r.image_to_text,
        peak_rss() >> 20
    );
    // The f32 matrix alone would be 500 MB; the process stays far below.
    assert!(peak_rss() < 200 << 20, "peak RSS {} MB", peak_rss() >> 20);
    // A sample of queries against the f64 definition (one row or column of the oracle each).
    let norm = |x: &[f32]| -> Vec<f64> {
        let n = x.iter().map(|&a| f64::from(a).powi(2)).sum::<f64>().sqrt();
        x.iter().map(|&a| f64::from(a) / n).collect()
    };
    let im: Vec<Vec<f64>> = images.chunks(dim).map(norm).collect();
    let tx: Vec<Vec<f64>> = texts.chunks(dim).map(norm).collect();
    let cos = |t: usize, i: usize| -> f64 { tx[t].iter().zip(&im[i]).map(|(a, b)| a * b).sum() };
    let image_hits = s.image_hits();
    for _ in 0..100 {
        let t = (rng.next_u64() % n_t as u64) as usize;
        let hits = &s.equivalent[t];
        let best = hits.iter().map(|&i| cos(t, i)).fold(f64::MIN, f64::max);
        let want = (0..n_i)
            .filter(|i| !hits.contains(i) && cos(t, *i) >= best)
            .count();
        assert_eq!(got.text_to_image[t], want, "caption {t}");
        let i = (rng.next_u64() % n_i as u64) as usize;
        let hits = &image_hits[i];
        let best = hits.iter().map(|&c| cos(c, i)).fold(f64::MIN, f64::max);
        let want = (0..n_t)
            .filter(|c| !hits.contains(c) && cos(*c, i) >= best)
            .count();
        assert_eq!(got.image_to_text[i], want, "image {i}");
    }
    assert!(
        r.text_to_image[0] > 0.2 && r.text_to_image[0] < 1.0,
        "{r:?}"
    );
}
