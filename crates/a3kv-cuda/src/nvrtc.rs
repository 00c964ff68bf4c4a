//! NVRTC at start-up: finds `libnvrtc` (the system's, `A3KV_NVRTC_LIB`, or the copy
//! `scripts/fetch-nvrtc.sh` puts in `tools/nvrtc/`), compiles every kernel file to PTX, and
//! reads or writes PTX folders (a GPU machine without NVRTC loads PTX compiled elsewhere).

use std::path::{Path, PathBuf};
use std::time::Instant;

use cudarc::nvrtc::{compile_ptx_with_opts, CompileError, CompileOptions};

use crate::kernels::{KernelFile, ARCH, FILES};
use crate::{DeviceError, Result};

/// Library file `scripts/fetch-nvrtc.sh` installs, relative to the repository.
pub const FETCHED_LIB: &str = "tools/nvrtc/lib/libnvrtc.so.12";

/// One kernel file compiled to PTX.
#[derive(Debug, Clone)]
pub struct CompiledFile {
    /// The kernel file.
    pub file: KernelFile,
    /// Its PTX text.
    pub ptx: String,
    /// Seconds NVRTC took (0 when loaded from a folder).
    pub compile_secs: f64,
}

/// Where `libnvrtc` may be, in order: `A3KV_NVRTC_LIB`, then [`FETCHED_LIB`] in the working
/// directory, the executable's directory, and their parents.
pub fn library_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("A3KV_NVRTC_LIB") {
        out.push(PathBuf::from(p));
    }
    let starts = [
        std::env::current_dir().ok(),
        std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf)),
    ];
    for start in starts.into_iter().flatten() {
        for dir in start.ancestors() {
            let p = dir.join(FETCHED_LIB);
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// Makes `libnvrtc` loadable by cudarc: the system's if present, else the first candidate
/// file, loaded by path and kept loaded (cudarc's own `dlopen("libnvrtc.so.12")` then finds
/// it by its soname). Returns the file loaded by path, `None` for the system's.
pub fn ensure_loaded() -> Result<Option<PathBuf>> {
    // SAFETY: loading a shared library by name; libnvrtc has no initialiser preconditions.
    if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Ok(None);
    }
    let candidates = library_candidates();
    for path in candidates.iter().filter(|p| p.is_file()) {
        // SAFETY: as above; the handle is leaked on purpose so the library stays loaded for
        // the process's lifetime (cudarc holds its own handle to the same object).
        if let Ok(lib) = unsafe { libloading::Library::new(path) } {
            std::mem::forget(lib);
            if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
                return Ok(Some(path.clone()));
            }
        }
    }
    Err(DeviceError::Nvrtc(format!(
        "libnvrtc not found (system library search, then {}); run scripts/fetch-nvrtc.sh or \
         set A3KV_NVRTC_LIB to a libnvrtc.so.12",
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// NVRTC's version `(major, minor)`.
pub fn version() -> Result<(i32, i32)> {
    ensure_loaded()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: nvrtcVersion writes two ints; libnvrtc is loaded (checked above).
    let status = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    if status == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        Ok((major, minor))
    } else {
        Err(DeviceError::Nvrtc(format!("nvrtcVersion: {status:?}")))
    }
}

fn compile_error(file: &KernelFile, e: CompileError) -> DeviceError {
    match e {
        CompileError::CompileError { log, options, .. } => DeviceError::Nvrtc(format!(
            "{} failed to compile (options {options:?}):\n{}",
            file.name,
            log.to_string_lossy()
        )),
        other => DeviceError::Nvrtc(format!("{}: {other:?}", file.name)),
    }
}

/// Compiles one kernel file to PTX for [`ARCH`] (f32 math as written: no fast-math).
pub fn compile(file: &KernelFile) -> Result<CompiledFile> {
    ensure_loaded()?;
    let t0 = Instant::now();
    let opts = CompileOptions {
        arch: Some(ARCH),
        name: Some(file.name.to_string()),
        options: vec!["--std=c++17".into()],
        ..Default::default()
    };
    let ptx =
        compile_ptx_with_opts(file.nvrtc_source(), opts).map_err(|e| compile_error(file, e))?;
    Ok(CompiledFile {
        file: *file,
        ptx: ptx.to_src(),
        compile_secs: t0.elapsed().as_secs_f64(),
    })
}

/// Compiles every kernel file.
pub fn compile_all() -> Result<Vec<CompiledFile>> {
    FILES.iter().map(compile).collect()
}

/// Writes `<module>.ptx` for each compiled file into `dir`.
pub fn write_ptx_dir(dir: &Path, files: &[CompiledFile]) -> Result<()> {
    let io =
        |e: std::io::Error| DeviceError::Nvrtc(format!("writing PTX into {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    for f in files {
        std::fs::write(dir.join(format!("{}.ptx", f.file.module())), &f.ptx).map_err(io)?;
    }
    Ok(())
}

/// Reads `<module>.ptx` of every kernel file from `dir` (written by [`write_ptx_dir`]).
pub fn read_ptx_dir(dir: &Path) -> Result<Vec<CompiledFile>> {
    FILES
        .iter()
        .map(|file| {
            let path = dir.join(format!("{}.ptx", file.module()));
            let ptx = std::fs::read_to_string(&path)
                .map_err(|e| DeviceError::Nvrtc(format!("reading {}: {e}", path.display())))?;
            Ok(CompiledFile {
                file: *file,
                ptx,
                compile_secs: 0.0,
            })
        })
        .collect()
}
