//! Compiles every kernel file in `kernels/` to PTX through NVRTC and fails on any NVRTC
//! error, so kernel syntax and type errors are caught on machines without a GPU (CI installs
//! libnvrtc with scripts/setup.sh -> scripts/fetch-nvrtc.sh). Skips, loudly, only when no
//! libnvrtc can be found at all. Needs the `cuda` feature.
#![cfg(feature = "cuda")]

use a3kv_cuda::kernels::{defined_functions, FILES};
use a3kv_cuda::nvrtc;

#[test]
fn every_kernel_compiles_to_ptx_with_every_function() {
    if let Err(e) = nvrtc::ensure_loaded() {
        eprintln!("\n\n*** SKIPPED: every_kernel_compiles_to_ptx: {e} ***\n\n");
        return;
    }
    let (major, minor) = nvrtc::version().unwrap();
    let files = nvrtc::compile_all().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(files.len(), FILES.len());
    for f in &files {
        eprintln!(
            "NVRTC {major}.{minor}: {} -> {} bytes of PTX in {:.3} s",
            f.file.name,
            f.ptx.len(),
            f.compile_secs
        );
        assert!(f.ptx.contains(".target sm_90"), "{}: target", f.file.name);
        for name in f.file.functions {
            assert!(
                f.ptx.contains(&format!(".entry {name}(")),
                "{}: no entry {name}",
                f.file.name
            );
        }
        assert_eq!(
            defined_functions(f.file.source).len(),
            f.file.functions.len()
        );
    }
    // The PTX folder round trip the device check uses.
    let dir = std::env::temp_dir().join(format!("a3kv-ptx-{}", std::process::id()));
    nvrtc::write_ptx_dir(&dir, &files).unwrap();
    let back = nvrtc::read_ptx_dir(&dir).unwrap();
    assert!(back.iter().zip(&files).all(|(a, b)| a.ptx == b.ptx));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_kernel_with_an_error_fails_with_the_nvrtc_log() {
    if nvrtc::ensure_loaded().is_err() {
        eprintln!("\n\n*** SKIPPED: a_kernel_with_an_error_fails: libnvrtc not found ***\n\n");
        return;
    }
    let bad = a3kv_cuda::kernels::KernelFile {
        name: "broken.cu",
        source: "extern \"C\" __global__ void broken(u32 x) { undefined_thing(x); }",
        functions: &["broken"],
    };
    let e = nvrtc::compile(&bad).unwrap_err().to_string();
    assert!(
        e.contains("broken.cu") && e.contains("undefined_thing"),
        "{e}"
    );
}
