//! MIM, masked image modelling by pixel regression (SimMIM, arXiv 2111.09886).
//!
//! A share r (`StepCache::mim_ratio`, default 0.4) of each image's N patches, n = ⌈r·N⌉ of
//! them (at least one, fewer than N), is chosen from a SplitMix64 stream of (seed, step,
//! "mim", image index) by a partial Fisher–Yates shuffle; their pixels are set to 0 (the
//! normalised mean colour) before the image-only pass (vision experts). The MIM head
//! (`heads.mim`, one linear layer per token) predicts every patch's C·P² pixels, normalised per
//! patch (mean 0, variance 1) as the target; the loss is the mean squared error over the
//! masked patches M only:
//!   L = (1/|M|) Σ_{(b,p) ∈ M} mean_k (ŷ_bpk − y_bpk)².
//!
//! Deviation: masking is in pixel space (masked patches are zeroed), not by SimMIM's
//! learnable [MASK] token embedding, so the encoder needs no extra parameter and the masked
//! image is an ordinary input. The mask is at the model's patch size (SimMIM masks 32×32
//! blocks), the target is normalised per patch (SimMIM regresses raw pixels with an L1 loss)
//! and the loss is the squared error.

use mmerge_core::hash::{GOLDEN_GAMMA, fnv1a, splitmix64};
use mmerge_models::heads::MimHead;
use tch::{Kind, Tensor};

use super::mlm::{below, row_stream};
use super::{Objective, ObjectiveDef, StepCache};
use crate::error::{Result, TrainError};
use crate::input::ModelBatch;
use crate::net::Net;

pub const OBJECTIVE: ObjectiveDef = ObjectiveDef {
    name: "mim",
    formula: "mean_{masked patches} mean_k (MimHead(h)_pk − norm(pixels)_pk)²",
    build,
    source: include_str!("mim.rs"),
};

#[derive(Debug)]
struct Mim {
    head: MimHead,
}

fn build(net: &mut Net) -> Result<Box<dyn Objective>> {
    let head = MimHead::new(&(net.heads() / "mim"), net.config());
    Ok(Box::new(Mim { head }))
}

/// The patch mask, row-major [B, N] (true = masked): n = ⌈ratio·N⌉ clamped to [1, N − 1]
/// patches per image, image b drawn from the SplitMix64 stream of (seed, step, "mim", b).
pub fn patch_mask(b: usize, n: usize, ratio: f64, seed: u64, step: u64) -> Vec<bool> {
    let base = splitmix64(seed ^ fnv1a(b"mim") ^ step.wrapping_mul(GOLDEN_GAMMA));
    let count = ((ratio.clamp(0.0, 1.0) * n as f64).ceil() as usize).clamp(1, n.max(2) - 1);
    let mut out = vec![false; b * n];
    for (r, row) in out.chunks_mut(n.max(1)).enumerate() {
        let mut rng = row_stream(base, r);
        let mut idx: Vec<usize> = (0..n).collect();
        for k in 0..count.min(n) {
            let j = k + below(&mut rng, n - k);
            idx.swap(k, j);
            row[idx[k]] = true;
        }
    }
    out
}

/// `pixels` [B, C, S, S] with the pixels of the masked patches (`mask` [B, N] bool or 0/1,
/// N = (S/patch)², row-major) set to 0.
pub fn mask_patches(pixels: &Tensor, mask: &Tensor, patch: i64) -> Tensor {
    let s = pixels.size();
    let (b, side) = (s[0], s[2]);
    let g = side / patch;
    let keep = (mask.to_kind(Kind::Float).neg() + 1.0)
        .view([b, 1, g, 1, g, 1])
        .expand([b, 1, g, patch, g, patch], false)
        .reshape([b, 1, side, side]);
    pixels * keep
}

impl Objective for Mim {
    fn loss(&self, net: &Net, batch: &ModelBatch, cache: &StepCache) -> Result<Tensor> {
        if !(cache.mim_ratio > 0.0 && cache.mim_ratio < 1.0) {
            return Err(TrainError::Invalid(format!(
                "mim_ratio must be in (0, 1), got {}",
                cache.mim_ratio
            )));
        }
        let pixels = batch.image()?;
        let cfg = net.config();
        let g = cfg.image_size / cfg.patch_size;
        let b = pixels.size()[0];
        let mask = patch_mask(
            b as usize,
            (g * g) as usize,
            cache.mim_ratio,
            cache.seed,
            cache.step,
        );
        let mask = Tensor::from_slice(&mask)
            .view([b, g * g])
            .to_device(pixels.device());
        let h = net
            .encoder
            .encode_image(&mask_patches(pixels, &mask, cfg.patch_size), cache.train)?;
        if cache.sampled_targets {
            // Targets drawn from a unit-variance Gaussian around the prediction (a Fisher
            // with sampled labels for a squared-error loss).
            let pred = self.head.forward(&h).detach();
            let noise = cache.normal(&pred.size(), "mim", pred.device());
            return Ok(self.head.loss_against(&h, &(pred + noise), &mask));
        }
        Ok(self.head.loss(&h, pixels, &mask))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_mask_counts_and_determinism() {
        let m = patch_mask(100, 16, 0.4, 3, 5);
        for row in m.chunks(16) {
            assert_eq!(row.iter().filter(|&&x| x).count(), 7); // ⌈0.4·16⌉
        }
        assert_eq!(m, patch_mask(100, 16, 0.4, 3, 5));
        assert_ne!(m, patch_mask(100, 16, 0.4, 3, 6));
        // Every patch is masked about r of the time.
        let m = patch_mask(4000, 16, 0.4, 3, 5);
        for p in 0..16 {
            let f = m.chunks(16).filter(|r| r[p]).count() as f64 / 4000.0;
            assert!((f - 7.0 / 16.0).abs() < 0.03, "patch {p}: {f}");
        }
        // At least one, never all.
        assert_eq!(
            patch_mask(1, 16, 0.01, 0, 0).iter().filter(|&&x| x).count(),
            1
        );
        assert_eq!(
            patch_mask(1, 16, 0.99, 0, 0).iter().filter(|&&x| x).count(),
            15
        );
    }

    #[test]
    fn mask_patches_zeroes_exactly_the_masked_patches() {
        let px =
            Tensor::arange(2 * 3 * 4 * 4, (Kind::Float, tch::Device::Cpu)).view([2, 3, 4, 4]) + 1.0;
        let mask =
            Tensor::from_slice(&[true, false, false, true, false, true, false, false]).view([2, 4]);
        let out = mask_patches(&px, &mask, 2);
        let v: Vec<f32> = Vec::try_from(out.view([-1])).unwrap();
        for b in 0..2 {
            for c in 0..3 {
                for y in 0..4 {
                    for x in 0..4 {
                        let p = (y / 2) * 2 + x / 2;
                        let at = ((b * 3 + c) * 4 + y) * 4 + x;
                        let masked =
                            [[true, false, false, true], [false, true, false, false]][b][p];
                        let want = if masked { 0.0 } else { at as f32 + 1.0 };
                        assert_eq!(v[at], want, "b{b} c{c} y{y} x{x}");
                    }
                }
            }
        }
    }
}
