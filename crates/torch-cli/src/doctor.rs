//! `mmerge doctor`: what libtorch the binary runs on, and proof that it works.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use tch::{Cuda, Device, Tensor};

/// The PyTorch version tch 0.26 is generated for (torch-sys' `TORCH_VERSION`).
pub const EXPECTED_TORCH_VERSION: &str = "2.13.0";

/// Side of the square matrices of [`matmul_check`].
const N: usize = 64;

/// Outcome of [`matmul_check`].
#[derive(Debug, Clone, Copy)]
pub struct MatmulCheck {
    pub device: Device,
    /// Largest absolute difference between libtorch and the reference loop.
    pub max_abs_err: f64,
    pub tolerance: f64,
    pub micros: u128,
}

impl MatmulCheck {
    pub fn passed(&self) -> bool {
        self.max_abs_err <= self.tolerance
    }
}

/// Multiplies two deterministic pseudo-random `N x N` f32 matrices with
/// libtorch on `device` and compares with a plain triple loop in f64.
pub fn matmul_check(device: Device) -> Result<MatmulCheck> {
    let a = pseudo_random(N * N, 1);
    let b = pseudo_random(N * N, 2);
    let n = N as i64;

    let start = Instant::now();
    let ta = Tensor::f_from_slice(&a)?
        .f_reshape([n, n])?
        .f_to_device(device)?;
    let tb = Tensor::f_from_slice(&b)?
        .f_reshape([n, n])?
        .f_to_device(device)?;
    let tc = ta
        .f_matmul(&tb)?
        .f_to_device(Device::Cpu)?
        .f_reshape([-1])?;
    let c = Vec::<f32>::try_from(&tc).context("copying the matmul result out of libtorch")?;
    let micros = start.elapsed().as_micros();
    if c.len() != N * N {
        bail!("matmul returned {} elements, expected {}", c.len(), N * N);
    }

    let mut max_abs_err = 0f64;
    for i in 0..N {
        for j in 0..N {
            let want: f64 = (0..N)
                .map(|k| f64::from(a[i * N + k]) * f64::from(b[k * N + j]))
                .sum();
            let got = f64::from(c[i * N + j]);
            // NaN must fail the check, so no f64::max here.
            let err = (got - want).abs();
            if err.is_nan() || err > max_abs_err {
                max_abs_err = if err.is_nan() { f64::INFINITY } else { err };
            }
        }
    }
    // Entries are sums of 64 products of numbers in [-1, 1): f32 round-off is
    // ~1e-6; TF32 tensor cores (if someone enables them) stay well under 1e-2.
    Ok(MatmulCheck {
        device,
        max_abs_err,
        tolerance: 1e-2,
        micros,
    })
}

/// Values in [-1, 1) from core's SplitMix64 stream: no dependence on torch's RNG.
fn pseudo_random(len: usize, seed: u64) -> Vec<f32> {
    let mut g = mmerge_core::hash::SplitMix64::new(seed);
    (0..len).map(|_| g.signed_unit_f32()).collect()
}

/// The shared library `file_name` as mapped into this process (Linux: from
/// /proc/self/maps, so symlinks are resolved).
fn loaded_library(file_name: &str) -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| Path::new(path).file_name().is_some_and(|f| f == file_name))
        .map(PathBuf::from)
}

/// PyTorch version of the install `lib` (a path of libtorch_cpu.so) belongs to:
/// the `build-version` file of a libtorch/view directory, else the wheel's
/// `torch/version.py`.
fn libtorch_version(lib: &Path) -> Option<(String, PathBuf)> {
    let mut candidates = Vec::new();
    // As loaded (e.g. <view>/lib/libtorch_cpu.so -> <view>/build-version) ...
    if let Some(root) = lib.parent().and_then(Path::parent) {
        candidates.push(root.join("build-version"));
        candidates.push(root.join("version.py"));
    }
    // ... and with symlinks resolved (<site>/torch/lib -> <site>/torch/version.py).
    if let Some(root) = lib
        .canonicalize()
        .ok()
        .as_deref()
        .and_then(Path::parent)
        .and_then(Path::parent)
    {
        candidates.push(root.join("build-version"));
        candidates.push(root.join("version.py"));
    }
    candidates.into_iter().find_map(|file| {
        let text = std::fs::read_to_string(&file).ok()?;
        let version = if file.ends_with("version.py") {
            // `__version__ = '2.13.0'` (or "2.13.0+cu130")
            text.lines()
                .find_map(|l| l.strip_prefix("__version__"))?
                .trim_start_matches([' ', '='])
                .trim()
                .trim_matches(['\'', '"'])
                .to_owned()
        } else {
            text.trim().to_owned()
        };
        (!version.is_empty()).then_some((version, file))
    })
}

/// A multi-line, human-readable report on the libtorch this binary uses.
/// Fails only if libtorch cannot compute a correct matrix product.
pub fn report() -> Result<String> {
    let mut out = String::new();
    let w = &mut out;

    writeln!(w, "mmerge {} doctor", env!("CARGO_PKG_VERSION"))?;
    let built_against = option_env!("MMERGE_LIBTORCH_LIB").unwrap_or("(unknown)");
    writeln!(w, "  libtorch linked at build: {built_against}")?;
    match loaded_library("libtorch_cpu.so") {
        Some(lib) => {
            writeln!(w, "  libtorch loaded from:     {}", lib.display())?;
            match libtorch_version(&lib) {
                Some((v, file)) => {
                    let ok = v.split('+').next() == Some(EXPECTED_TORCH_VERSION);
                    let verdict = if ok {
                        "ok".to_owned()
                    } else {
                        format!("MISMATCH: tch 0.26 needs {EXPECTED_TORCH_VERSION}")
                    };
                    writeln!(
                        w,
                        "  libtorch version:         {v} ({verdict}; from {})",
                        file.display()
                    )?;
                }
                None => writeln!(
                    w,
                    "  libtorch version:         unknown (no build-version/version.py near it; tch needs {EXPECTED_TORCH_VERSION})"
                )?,
            }
        }
        None => writeln!(
            w,
            "  libtorch loaded from:     (not found in /proc/self/maps)"
        )?,
    }

    let yes_no = |b: bool| if b { "yes" } else { "no" };
    writeln!(
        w,
        "  CPU kernels:              MKL {}, oneDNN {}, OpenMP {}",
        yes_no(tch::utils::has_mkl()),
        yes_no(tch::utils::has_mkldnn()),
        yes_no(tch::utils::has_openmp()),
    )?;
    // at::hasCUDA() (tch::utils::has_cuda) is false on a CUDA build without a
    // GPU, so ask the loader whether the CUDA backend is in the process.
    let cuda_backend = loaded_library("libtorch_cuda.so");
    match &cuda_backend {
        Some(lib) => writeln!(w, "  CUDA backend:             linked ({})", lib.display())?,
        None => writeln!(
            w,
            "  CUDA backend:             not linked: CPU-only build (GPUs need scripts/setup-libtorch --cuda)"
        )?,
    }
    let cuda = Cuda::is_available();
    let devices = Cuda::device_count();
    write!(
        w,
        "  CUDA available:           {} ({devices} device(s))",
        yes_no(cuda)
    )?;
    if cuda {
        write!(w, ", cuDNN {}", yes_no(Cuda::cudnn_is_available()))?;
    } else if cuda_backend.is_some() {
        write!(w, "; no GPU, or no driver for CUDA 13 (nvidia-smi?)")?;
    }
    writeln!(w)?;
    writeln!(
        w,
        "  torch threads:            {} intra-op, {} inter-op ({} CPUs visible)",
        tch::get_num_threads(),
        tch::get_num_interop_threads(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    )?;

    let mut devices_to_check = vec![Device::Cpu];
    if cuda {
        devices_to_check.push(Device::Cuda(0));
    }
    let mut failures = Vec::new();
    for device in devices_to_check {
        let check = matmul_check(device)?;
        writeln!(
            w,
            "  {N}x{N} f32 matmul on {:?}: {} (max abs error {:.2e} vs a plain loop, {} us)",
            check.device,
            if check.passed() { "ok" } else { "WRONG" },
            check.max_abs_err,
            check.micros,
        )?;
        if !check.passed() {
            failures.push(format!(
                "{device:?}: max abs error {:.3e}",
                check.max_abs_err
            ));
        }
    }
    if !failures.is_empty() {
        bail!(
            "libtorch computed a wrong matrix product ({}):\n{out}",
            failures.join(", ")
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_matches_plain_loop_on_cpu() -> Result<()> {
        let check = matmul_check(Device::Cpu)?;
        assert!(check.passed(), "{check:?}");
        assert!(check.max_abs_err < 1e-4, "{check:?}");
        Ok(())
    }

    #[test]
    fn report_mentions_the_essentials() -> Result<()> {
        let report = report()?;
        for needle in [
            "libtorch version",
            "CUDA backend",
            "CUDA available",
            "torch threads",
            "matmul on Cpu: ok",
        ] {
            assert!(report.contains(needle), "missing {needle:?} in:\n{report}");
        }
        Ok(())
    }

    #[test]
    fn pseudo_random_is_in_range_and_deterministic() {
        let a = pseudo_random(1000, 7);
        assert_eq!(a, pseudo_random(1000, 7));
        assert!(a.iter().all(|x| (-1.0..1.0).contains(x)));
        assert_ne!(a, pseudo_random(1000, 8));
    }
}
