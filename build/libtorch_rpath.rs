//! The build script of every crate that links libtorch (`build = "../../build/libtorch_rpath.rs"`
//! in its Cargo.toml, plus `torch-sys` as a direct dependency): lets its binaries and test
//! binaries find libtorch at run time without `LD_LIBRARY_PATH`.
//!
//! torch-sys (`links = "tch"`) tells its direct dependents where libtorch's
//! shared libraries are through `DEP_TCH_LIBTORCH_LIB`. tch's own build script
//! adds an rpath too, but `cargo:rustc-link-arg` only reaches tch's own targets,
//! not downstream binaries (LaurentMazare/tch-rs#767), hence this copy.

use std::env;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=../../build/libtorch_rpath.rs");
    let Some(lib) = env::var_os("DEP_TCH_LIBTORCH_LIB") else {
        // Only missing when torch-sys did not run its normal path (e.g. docs).
        return;
    };
    let lib = Path::new(&lib);
    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os != "linux" {
        return;
    }
    // Absolute RUNPATH into the libtorch install (binaries are not relocatable,
    // which is fine for this repo). libtorch_cpu.so then finds the NVIDIA
    // runtime libraries through its own $ORIGIN-relative RPATH.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    // For `mmerge doctor`: where the binary was linked against.
    println!("cargo:rustc-env=MMERGE_LIBTORCH_LIB={}", lib.display());

    // CUDA builds: torch-sys already passes -ltorch_cuda, but rustc links with
    // --as-needed and nothing references libtorch_cuda.so directly, so the
    // linker would drop it and CUDA would be "unavailable" at run time
    // ("Cannot initialize CUDA without ATen_cuda library", tch-rs#177/#201).
    // Force it (and libtorch.so, as tch's own build script does) into NEEDED.
    // Not in the lean CPU install: its view hides libtorch_cuda.so, and forcing
    // libtorch.so there would pull the missing libtorch_cuda.so at run time.
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-ltorch");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
