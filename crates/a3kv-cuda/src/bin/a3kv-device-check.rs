//! `a3kv-device-check`: the GPU side of scripts/device-check.sh, built here and carried to a
//! GPU machine (release, stripped). Honest status: written and built on machines without a
//! GPU; it has never run on one.
//!
//!   a3kv-device-check probe                  # driver + devices; exit 2 without a driver
//!   a3kv-device-check emit-ptx DIR           # NVRTC-compile every kernel into DIR/*.ptx
//!   a3kv-device-check parity OUT.json [--ptx-dir DIR]
//!   a3kv-device-check bench OUT.json [--ptx-dir DIR] [--tokens 4096,16384,32768] [--reps N]
//!
//! Exit status: 0 success, 1 parity failure or runtime error, 2 no usable CUDA device.

use std::path::PathBuf;
use std::process::ExitCode;

use a3kv_cuda::backend::{CudaBackend, PtxSource};
use a3kv_cuda::{nvrtc, probe_driver, resolve_device, DeviceRequest, StorageDtype};

fn usage() -> ExitCode {
    eprintln!("usage: a3kv-device-check probe | emit-ptx DIR | parity OUT.json [--ptx-dir DIR] | bench OUT.json [--ptx-dir DIR] [--tokens N,N] [--reps N]");
    ExitCode::from(64)
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn open(args: &[String]) -> Result<CudaBackend, ExitCode> {
    if let Err(e) = resolve_device(DeviceRequest::Cuda(0), &probe_driver()) {
        eprintln!("a3kv-device-check: {e}");
        return Err(ExitCode::from(2));
    }
    let src = match flag(args, "--ptx-dir") {
        Some(d) => PtxSource::NvrtcOrDir(PathBuf::from(d)),
        None => PtxSource::Nvrtc,
    };
    CudaBackend::open(0, &src).map_err(|e| {
        eprintln!("a3kv-device-check: {e}");
        ExitCode::from(1)
    })
}

fn write(path: &str, text: &str) -> Result<(), ExitCode> {
    std::fs::write(path, text).map_err(|e| {
        eprintln!("a3kv-device-check: writing {path}: {e}");
        ExitCode::from(1)
    })
}

fn header(be: &CudaBackend) -> String {
    let (name, cc) = be
        .describe()
        .unwrap_or_else(|e| (format!("unknown ({e})"), (0, 0)));
    let compile: Vec<String> = be
        .kernel_load
        .compile_secs
        .iter()
        .map(|(f, s)| format!("\"{f}\":{s:.4}"))
        .collect();
    format!(
        "\"device\":\"{}\",\"compute_capability\":\"{}.{}\",\"kernels_from\":\"{}\",\"nvrtc_secs\":{{{}}},\"module_load_secs\":{:.4}",
        name.replace('"', "'"),
        cc.0,
        cc.1,
        be.kernel_load.source,
        compile.join(","),
        be.kernel_load.load_secs
    )
}

fn run(args: &[String]) -> Result<(), ExitCode> {
    match args.first().map(String::as_str) {
        Some("probe") => {
            let p = probe_driver();
            println!("{p:?}");
            resolve_device(DeviceRequest::Cuda(0), &p)
                .map(drop)
                .map_err(|e| {
                    eprintln!("a3kv-device-check: {e}");
                    ExitCode::from(2)
                })
        }
        Some("emit-ptx") => {
            let dir = args.get(1).ok_or_else(usage)?;
            let files = nvrtc::compile_all().map_err(|e| {
                eprintln!("a3kv-device-check: {e}");
                ExitCode::from(1)
            })?;
            nvrtc::write_ptx_dir(std::path::Path::new(dir), &files).map_err(|e| {
                eprintln!("a3kv-device-check: {e}");
                ExitCode::from(1)
            })?;
            for f in &files {
                println!(
                    "{}: {} bytes of PTX, NVRTC {:.3} s",
                    f.file.name,
                    f.ptx.len(),
                    f.compile_secs
                );
            }
            Ok(())
        }
        Some("parity") => {
            let out = args.get(1).ok_or_else(usage)?;
            let be = open(args)?;
            let results = a3kv_cuda::parity::run_all(&be).map_err(|e| {
                eprintln!("a3kv-device-check: parity: {e}");
                ExitCode::from(1)
            })?;
            let failed = results.iter().filter(|r| !r.passed()).count();
            for r in &results {
                eprintln!(
                    "{} {:<40} {:>5} max_abs_err {:.3e} (bound {:.3e})",
                    if r.passed() { "ok  " } else { "FAIL" },
                    r.kernel,
                    r.dtype.to_string(),
                    r.max_abs_err,
                    r.bound
                );
            }
            let items: Vec<String> = results.iter().map(|r| r.to_json()).collect();
            write(
                out,
                &format!(
                    "{{{},\"failed\":{failed},\"results\":[{}]}}\n",
                    header(&be),
                    items.join(",")
                ),
            )?;
            if failed > 0 {
                return Err(ExitCode::from(1));
            }
            Ok(())
        }
        Some("bench") => {
            let out = args.get(1).ok_or_else(usage)?;
            let tokens: Vec<usize> = flag(args, "--tokens")
                .unwrap_or_else(|| "4096,16384,32768".into())
                .split(',')
                .filter_map(|s| s.trim().parse().ok())
                .collect();
            let reps = flag(args, "--reps")
                .and_then(|s| s.parse().ok())
                .unwrap_or(3);
            let be = open(args)?;
            let mut rows = Vec::new();
            for shape in &a3kv_cuda::bench::SHAPES {
                for &t in &tokens {
                    match a3kv_cuda::bench::bench_one(
                        &be,
                        shape,
                        t,
                        StorageDtype::BF16,
                        0.15,
                        64,
                        reps,
                    ) {
                        Ok(row) => {
                            eprintln!("{row}");
                            rows.push(row);
                        }
                        Err(e) => {
                            eprintln!("a3kv-device-check: bench {} at {t}: {e}", shape.name);
                            rows.push(format!(
                                "{{\"model\":\"{}\",\"tokens\":{t},\"error\":\"{}\"}}",
                                shape.name,
                                e.to_string().replace('"', "'")
                            ));
                        }
                    }
                    // Write after every row: a run cut short by the time limit keeps what it has.
                    write(
                        out,
                        &format!("{{{},\"rows\":[{}]}}\n", header(&be), rows.join(",")),
                    )?;
                }
            }
            Ok(())
        }
        _ => Err(usage()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}
