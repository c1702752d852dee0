//! Image–text retrieval recall@k in both directions from embeddings, without the
//! n_txt × n_img similarity matrix.
//!
//! **Formula.** Similarity s(t, i) = ⟨t̂, î⟩ over the text row t̂ and the image row î, where
//! for [`Similarity::Cosine`] x̂ = x / ‖x‖₂ (each row normalised once, up front: the norm
//! in f64, the quotient rounded to f32) and for [`Similarity::Dot`] x̂ = x. Dot products are
//! f32 with a fixed summation order (8 strided partial sums, then a fixed tree), so a pair
//! has one value wherever it is computed (four text rows share each image row's loads). With H(t) = `split.equivalent[t]` (the caption's
//! image and every image with an identical caption) and H(i) = `split.image_hits()[i]`:
//!
//! - text → image: rank(t) = #{i ∉ H(t) : s(t, i) ≥ max_{h ∈ H(t)} s(t, h)},
//! - image → text: rank(i) = #{t ∉ H(i) : s(t, i) ≥ max_{h ∈ H(i)} s(h, i)},
//! - R@k = the fraction of queries with rank < k, reported at k ∈ [`RECALL_KS`] = 1, 5, 10.
//!
//! **Source.** Recall@k as in Karpathy & Fei-Fei 2015 (arXiv:1412.2306); cosine similarity of
//! L2-normalised embeddings as in CLIP (arXiv:2103.00020) and ALBEF's ITC retrieval
//! (arXiv:2107.07651). The ranks are exactly those of
//! [`super::retrieval::text_to_image_ranks`] / [`super::retrieval::image_to_text_ranks`] on the
//! full matrix of the same similarities.
//!
//! **Deviations.** Shared captions count as hits (as [`RetrievalSplit`] defines). **Ties count
//! against the query** (the pessimistic rank): a hit tied with non-hits is ranked after them.
//! A collapsed model whose embeddings are all equal then scores R@k = 0 rather than 1 (the
//! optimistic rule) or an artefact of the gallery order (a stable sort), and the rank is a
//! function of the similarity values alone: no index order, chunk size or thread count enters.
//!
//! **Algorithm.** One pass computes each similarity once and serves both directions. First the
//! best hit of every query, max s over its hits (Σ|H| dot products), and how many hits reach
//! it. Then the texts are cut into chunks of [`EmbeddingRetrieval::chunk`] rows, processed in
//! parallel (rayon); a chunk walks all images, and each s(t, i) adds 1 to count(t) when
//! s ≥ best(t) and to count(i) when s ≥ best(i). Image counts are summed over chunks in
//! integers, so the result is the same whatever the order or thread count. The hits are then
//! taken out: rank = count − #{hits with s = best}.
//!
//! **Memory.** 4·d·(n_img + n_txt) bytes for the embeddings (a normalised copy for cosine),
//! about 40·(n_img + n_txt) bytes for the best values, tie counts, ranks and image hit lists,
//! and 8·n_img bytes of image counts per rayon worker: no term in n_img × n_txt. 5,000 images
//! × 25,000 captions at d = 768 take 92 MB of embeddings plus about 1.2 MB; the time is
//! n_img·n_txt·d multiply-adds (2 s on 2 cores at d = 768, 0.2 s at d = 16).

use std::borrow::Cow;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::retrieval::recall_at_k;
use crate::error::{DataError, Result};
use crate::formats::captions::RetrievalSplit;

/// The recall cut-offs reported for retrieval: R@1, R@5, R@10.
pub const RECALL_KS: [usize; 3] = [1, 5, 10];

/// How two embedding rows are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Similarity {
    /// ⟨x/‖x‖, y/‖y‖⟩: every row is L2-normalised once; a zero row is an error.
    Cosine,
    /// ⟨x, y⟩ on the rows as given (for embeddings the model already normalised).
    Dot,
}

/// Settings of [`embedding_ranks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddingRetrieval {
    pub similarity: Similarity,
    /// Text rows per parallel work item (≥ 1). It changes the speed, never a result.
    pub chunk: usize,
}

impl Default for EmbeddingRetrieval {
    /// Cosine similarity, chunks of 256 text rows.
    fn default() -> Self {
        Self {
            similarity: Similarity::Cosine,
            chunk: 256,
        }
    }
}

/// The 0-based rank of each query's best hit, both directions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrievalRanks {
    /// Per caption, the rank of its best hit image among all images.
    pub text_to_image: Vec<usize>,
    /// Per image, the rank of its best hit caption among all captions.
    pub image_to_text: Vec<usize>,
}

impl RetrievalRanks {
    /// Recall@k in both directions for each k in `ks`.
    pub fn recall(&self, ks: &[usize]) -> RetrievalRecall {
        RetrievalRecall {
            ks: ks.to_vec(),
            text_to_image: ks
                .iter()
                .map(|&k| recall_at_k(&self.text_to_image, k))
                .collect(),
            image_to_text: ks
                .iter()
                .map(|&k| recall_at_k(&self.image_to_text, k))
                .collect(),
        }
    }
}

/// Recall@k in both directions: `text_to_image[j]` and `image_to_text[j]` are at `ks[j]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrievalRecall {
    pub ks: Vec<usize>,
    pub text_to_image: Vec<f64>,
    pub image_to_text: Vec<f64>,
}

/// Recall@1/5/10 in both directions of `split` from its image embeddings (`images`,
/// n_img × `dim`, row-major, in the split's image order) and caption embeddings (`texts`,
/// n_txt × `dim`, in caption order). See [`embedding_ranks`].
pub fn embedding_recall(
    split: &RetrievalSplit,
    images: &[f32],
    texts: &[f32],
    dim: usize,
    opts: EmbeddingRetrieval,
) -> Result<RetrievalRecall> {
    Ok(embedding_ranks(split, images, texts, dim, opts)?.recall(&RECALL_KS))
}

/// The rank of each query's best hit in both directions (the module's formula). Errors: a
/// zero `dim` or `chunk`, embeddings whose length is not rows × `dim`, a value that is not
/// finite, a zero row for cosine, dot products that could overflow f32, or a split whose hit
/// sets are inconsistent.
pub fn embedding_ranks(
    split: &RetrievalSplit,
    images: &[f32],
    texts: &[f32],
    dim: usize,
    opts: EmbeddingRetrieval,
) -> Result<RetrievalRanks> {
    let (n_i, n_t) = (split.images.len(), split.captions.len());
    if dim == 0 || opts.chunk == 0 {
        return Err(DataError::OutOfRange {
            what: format!("retrieval: embedding dimension {dim}, chunk {}", opts.chunk),
            allowed: "both must be at least 1".into(),
        });
    }
    let text_hits = &split.equivalent;
    check_hits(text_hits, n_t, n_i, "caption", "image")?;
    let image_hits = split.image_hits();
    check_hits(&image_hits, n_i, n_t, "image", "caption")?;
    let img = prepare("image embeddings", images, n_i, dim, opts.similarity)?;
    let txt = prepare("text embeddings", texts, n_t, dim, opts.similarity)?;
    if opts.similarity == Similarity::Dot {
        check_overflow(&img, &txt, dim)?;
    }
    let (img, txt) = (&*img, &*txt);
    fn row(x: &[f32], dim: usize, r: usize) -> &[f32] {
        &x[r * dim..(r + 1) * dim]
    }

    // The best hit of each query and how many hits reach it, s always as dot(text, image).
    let best = |hits: &[usize], s: &dyn Fn(usize) -> f32| -> (f32, usize) {
        let v: Vec<f32> = hits.iter().map(|&h| s(h)).collect();
        let b = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        (b, v.iter().filter(|&&x| x == b).count())
    };
    let best_t: Vec<(f32, usize)> = (0..n_t)
        .into_par_iter()
        .map(|t| best(&text_hits[t], &|i| dot(row(txt, dim, t), row(img, dim, i))))
        .collect();
    let best_i: Vec<(f32, usize)> = (0..n_i)
        .into_par_iter()
        .map(|i| best(&image_hits[i], &|t| dot(row(txt, dim, t), row(img, dim, i))))
        .collect();

    let chunk = opts.chunk;
    let mut text_to_image = vec![0usize; n_t];
    let image_count = text_to_image
        .par_chunks_mut(chunk)
        .enumerate()
        .fold(
            || vec![0usize; n_i],
            |mut counts, (k, out)| {
                let t0 = k * chunk;
                let block = &txt[t0 * dim..(t0 + out.len()) * dim];
                mmerge_core::simd::fast(
                    #[inline(always)]
                    || count_block(block, img, dim, &best_t[t0..], &best_i, out, &mut counts),
                );
                counts
            },
        )
        .reduce(
            || vec![0usize; n_i],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                a
            },
        );
    for (r, (_, ties)) in text_to_image.iter_mut().zip(&best_t) {
        *r -= ties;
    }
    let image_to_text = image_count
        .iter()
        .zip(&best_i)
        .map(|(c, (_, ties))| c - ties)
        .collect();
    Ok(RetrievalRanks {
        text_to_image,
        image_to_text,
    })
}

/// For the text rows of `block` (row k is text t0 + k) against every image row: adds 1 to
/// `t_count[k]` for each image with s ≥ `best_t[k]` and to `i_count[i]` for each text with
/// s ≥ `best_i[i]`.
#[inline(always)]
fn count_block(
    block: &[f32],
    img: &[f32],
    dim: usize,
    best_t: &[(f32, usize)],
    best_i: &[(f32, usize)],
    t_count: &mut [usize],
    i_count: &mut [usize],
) {
    let quads = block.len() / (4 * dim) * 4;
    for ((irow, &(bi, _)), ci) in img.chunks_exact(dim).zip(best_i).zip(i_count) {
        let mut n = 0usize;
        let mut count = |k: usize, s: f32| {
            t_count[k] += usize::from(s >= best_t[k].0);
            n += usize::from(s >= bi);
        };
        for (q, rows) in block.chunks_exact(4 * dim).enumerate() {
            let (a, rest) = rows.split_at(dim);
            let (b, rest) = rest.split_at(dim);
            let (c, d) = rest.split_at(dim);
            for (r, s) in dot4([a, b, c, d], irow).into_iter().enumerate() {
                count(4 * q + r, s);
            }
        }
        for (k, trow) in block.chunks_exact(dim).enumerate().skip(quads) {
            count(k, dot(trow, irow));
        }
        *ci += n;
    }
}

const LANES: usize = 8;

/// ⟨a, b⟩ in f32: lane l sums the products at indices ≡ l (mod 8) in order, then the lanes
/// are added as ((0+4) + (1+5)) + ((2+6) + (3+7)). A fixed order, so one value per pair.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    dot4([a, a, a, a], b)[0]
}

/// [`dot`] of four rows with `b`, each pair with its own lanes in the order [`dot`] states
/// (so the same four values), `b` read once for the four.
#[inline(always)]
fn dot4(a: [&[f32]; 4], b: &[f32]) -> [f32; 4] {
    let mut acc = [[0f32; LANES]; 4];
    let whole = b.len() / LANES * LANES;
    let lanes = |x: &[f32]| -> [f32; LANES] {
        let mut v = [0f32; LANES];
        v.copy_from_slice(&x[..LANES]);
        v
    };
    for j in (0..whole).step_by(LANES) {
        let y = lanes(&b[j..]);
        for (acc, row) in acc.iter_mut().zip(a) {
            let x = lanes(&row[j..]);
            for l in 0..LANES {
                acc[l] += x[l] * y[l];
            }
        }
    }
    for (acc, row) in acc.iter_mut().zip(a) {
        for (l, (x, y)) in row[whole..].iter().zip(&b[whole..]).enumerate() {
            acc[l] += x * y;
        }
    }
    acc.map(|a| ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])))
}

/// Every query has at least one hit and every hit is in the gallery.
fn check_hits(
    hits: &[Vec<usize>],
    n_queries: usize,
    n_gallery: usize,
    query: &str,
    gallery: &str,
) -> Result<()> {
    let bad = |reason: String| DataError::Shape {
        what: "retrieval split",
        reason,
    };
    if hits.len() != n_queries {
        return Err(bad(format!(
            "{} {query} hit sets for {n_queries} {query}s",
            hits.len()
        )));
    }
    for (q, h) in hits.iter().enumerate() {
        if h.is_empty() {
            return Err(bad(format!("{query} {q} has no hit {gallery}")));
        }
        if let Some(&g) = h.iter().find(|&&g| g >= n_gallery) {
            return Err(bad(format!(
                "{query} {q} has hit {gallery} {g} of {n_gallery}"
            )));
        }
    }
    Ok(())
}

/// Checks `rows` × `dim` finite values and normalises them for cosine.
fn prepare<'a>(
    what: &'static str,
    x: &'a [f32],
    rows: usize,
    dim: usize,
    sim: Similarity,
) -> Result<Cow<'a, [f32]>> {
    if x.len() != rows * dim {
        return Err(DataError::Shape {
            what,
            reason: format!(
                "{} values, expected {rows} rows × {dim} = {}",
                x.len(),
                rows * dim
            ),
        });
    }
    if let Some(k) = x.iter().position(|v| !v.is_finite()) {
        return Err(DataError::OutOfRange {
            what: format!("{what}: row {}, column {} is {}", k / dim, k % dim, x[k]),
            allowed: "finite values".into(),
        });
    }
    if sim == Similarity::Dot {
        return Ok(Cow::Borrowed(x));
    }
    let mut out = Vec::with_capacity(x.len());
    for (r, row) in x.chunks_exact(dim).enumerate() {
        let norm = norm(row);
        if norm == 0.0 {
            return Err(DataError::OutOfRange {
                what: format!("{what}: row {r} is zero"),
                allowed: "non-zero rows for cosine similarity".into(),
            });
        }
        out.extend(row.iter().map(|&v| (f64::from(v) / norm) as f32));
    }
    Ok(Cow::Owned(out))
}

fn norm(row: &[f32]) -> f64 {
    row.iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt()
}

/// |⟨t, i⟩| ≤ ‖t‖·‖i‖ (Cauchy–Schwarz), and every partial sum obeys the same bound up to
/// rounding, so norms whose product stays under 1e37 (f32::MAX ≈ 3.4e38) cannot overflow.
fn check_overflow(img: &[f32], txt: &[f32], dim: usize) -> Result<()> {
    let max = |x: &[f32]| x.chunks_exact(dim).map(norm).fold(0.0, f64::max);
    let (a, b) = (max(img), max(txt));
    if a * b > 1e37 {
        return Err(DataError::OutOfRange {
            what: format!("dot similarity of image norms up to {a:e} and text norms up to {b:e}"),
            allowed: "products of norms up to 1e37 (beyond, f32 dot products can overflow)".into(),
        });
    }
    Ok(())
}
