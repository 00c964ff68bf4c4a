//! Kernel parity against the CPU twins on a real GPU: runs when a CUDA driver and a device
//! are present, and is skipped (with a loud message) otherwise. scripts/device-check.sh runs
//! the same checks through `a3kv-device-check parity`. Also checks, on any machine, that
//! the device-check binary fails clearly (exit 2) when there is no driver.
#![cfg(feature = "cuda")]

use a3kv_cuda::backend::{CudaBackend, PtxSource};
use a3kv_cuda::{probe_driver, DriverProbe};

fn has_gpu() -> bool {
    matches!(probe_driver(), DriverProbe::Present { devices } if devices > 0)
}

#[test]
fn every_kernel_matches_its_cpu_twin_on_the_gpu() {
    if !has_gpu() {
        eprintln!(
            "\n\n*** SKIPPED: gpu parity: no CUDA driver/device here ({:?}) ***\n\n",
            probe_driver()
        );
        return;
    }
    let be = CudaBackend::open(0, &PtxSource::Nvrtc).unwrap_or_else(|e| panic!("{e}"));
    let results = a3kv_cuda::parity::run_all(&be).unwrap_or_else(|e| panic!("{e}"));
    for r in &results {
        eprintln!("{}", r.to_json());
    }
    assert!(results.iter().all(|r| r.passed()), "parity failures above");
}

#[test]
fn without_a_driver_the_backend_and_the_check_binary_say_so() {
    if has_gpu() {
        return;
    }
    let e = CudaBackend::open(0, &PtxSource::Nvrtc)
        .err()
        .expect("no driver: open must fail")
        .to_string();
    assert!(e.contains("cuda:0"), "{e}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_a3kv-device-check"))
        .args(["parity", "/dev/null"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("engine.device = \"cuda:0\"") && stderr.contains("CUDA"),
        "{stderr}"
    );
}
