//! Running a hot loop with the widest vector instructions the CPU has, without changing a bit
//! of its result.
//!
//! The workspace builds for baseline x86-64 (SSE2), so that one binary runs everywhere.
//! [`fast`] runs a closure inside a function compiled with AVX2 enabled when the CPU has it;
//! once the closure and what it calls are inlined, LLVM vectorises their loops 4 × f64 /
//! 8 × f32 wide instead of 2 / 4. IEEE-754 arithmetic gives the same bits at any vector width,
//! and Rust never contracts `a * b + c` into a fused multiply-add, so results are identical to
//! the baseline build: only the speed differs.

/// Runs `f`, compiled for AVX2 when the CPU supports it. Mark the closure `#[inline(always)]`
/// (`fast(#[inline(always)] || ...)`) and the functions it calls in its hot loop too: LLVM
/// does not always inline a large closure into the AVX2 function on its own, and code that is
/// not inlined keeps its baseline instructions.
#[inline(always)]
pub fn fast<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { avx2(f) };
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs_the_closure() {
        let v: Vec<f64> = (0..1000).map(|i| f64::from(i) * 0.1).collect();
        let slow: f64 = v.iter().map(|x| x * 3.0 + 1.0).sum();
        assert_eq!(
            super::fast(|| v.iter().map(|x| x * 3.0 + 1.0).sum::<f64>()),
            slow
        );
    }
}
