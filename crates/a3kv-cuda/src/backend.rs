//! The CUDA backend: one device context, a compute stream, and the kernels of `kernels/`
//! loaded from PTX (compiled by NVRTC at start-up, or read from a folder). Each operation
//! checks its shapes with [`crate::layout`] before launching; its CPU twin is in
//! [`crate::reference`]. Tensors are [`DeviceTensor`]s: 16-bit storage in a given dtype.
//!
//! Opening the backend probes the driver first ([`crate::device::probe_driver`]): without a
//! driver no CUDA call is made (the first one would panic inside cudarc).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg,
};

use crate::device::{probe_driver, resolve_device, DeviceChoice, DeviceRequest};
use crate::kernels::FILES;
use crate::layout::{self, A3Shape, AttentionShape, Launch};
use crate::nvrtc::{self, CompiledFile};
use crate::{DeviceError, Result, StorageDtype};

/// Where the PTX comes from.
#[derive(Debug, Clone)]
pub enum PtxSource {
    /// Compile every kernel file with NVRTC now.
    Nvrtc,
    /// Read `<module>.ptx` files from this folder.
    Dir(std::path::PathBuf),
    /// NVRTC, falling back to the folder when NVRTC cannot be loaded.
    NvrtcOrDir(std::path::PathBuf),
}

/// A device tensor: 16-bit elements of `dtype`, row-major.
#[derive(Debug)]
pub struct DeviceTensor {
    /// The elements.
    pub data: CudaSlice<u16>,
    /// Their dtype.
    pub dtype: StorageDtype,
}

/// How the kernels were obtained, for logs and reports.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelLoad {
    /// `nvrtc` or `ptx-dir`.
    pub source: &'static str,
    /// NVRTC seconds per file (empty for a folder).
    pub compile_secs: Vec<(&'static str, f64)>,
    /// Seconds to load every module and function.
    pub load_secs: f64,
}

/// An open CUDA device with the kernels loaded.
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    functions: HashMap<&'static str, CudaFunction>,
    /// How the kernels were loaded.
    pub kernel_load: KernelLoad,
}

fn drv(what: &str) -> impl Fn(cudarc::driver::DriverError) -> DeviceError + '_ {
    move |e| DeviceError::Driver(format!("{what}: {e}"))
}

fn cfg(l: Launch) -> LaunchConfig {
    LaunchConfig {
        grid_dim: l.grid,
        block_dim: l.block,
        shared_mem_bytes: l.shared_bytes,
    }
}

fn u32_of(what: &str, x: usize) -> Result<u32> {
    u32::try_from(x)
        .map_err(|_| DeviceError::BadArgument(format!("{what} = {x} does not fit in u32")))
}

fn check_len(what: &str, got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(DeviceError::BadArgument(format!(
            "{what}: {got} elements, shape needs {want}"
        )))
    }
}

impl CudaBackend {
    /// Opens CUDA device `ordinal` and loads the kernels. Errors (never panics) when no
    /// driver is present, the ordinal does not exist, or a kernel fails to compile or load.
    pub fn open(ordinal: usize, ptx: &PtxSource) -> Result<Self> {
        match resolve_device(DeviceRequest::Cuda(ordinal), &probe_driver())? {
            DeviceChoice::Cuda(_) => {}
            DeviceChoice::Cpu { .. } => {
                return Err(DeviceError::Unavailable {
                    requested: format!("cuda:{ordinal}"),
                    reason: "resolved to the CPU".into(),
                })
            }
        }
        let ctx = CudaContext::new(ordinal).map_err(drv("creating the context"))?;
        let stream = ctx
            .new_stream()
            .map_err(drv("creating the compute stream"))?;
        let (files, source) = match ptx {
            PtxSource::Nvrtc => (nvrtc::compile_all()?, "nvrtc"),
            PtxSource::Dir(dir) => (nvrtc::read_ptx_dir(dir)?, "ptx-dir"),
            PtxSource::NvrtcOrDir(dir) => match nvrtc::compile_all() {
                Ok(f) => (f, "nvrtc"),
                Err(_) => (nvrtc::read_ptx_dir(dir)?, "ptx-dir"),
            },
        };
        let t0 = Instant::now();
        let functions = Self::load(&ctx, &files)?;
        Ok(Self {
            ctx,
            stream,
            functions,
            kernel_load: KernelLoad {
                source,
                compile_secs: files
                    .iter()
                    .map(|f| (f.file.name, f.compile_secs))
                    .collect(),
                load_secs: t0.elapsed().as_secs_f64(),
            },
        })
    }

    fn load(
        ctx: &Arc<CudaContext>,
        files: &[CompiledFile],
    ) -> Result<HashMap<&'static str, CudaFunction>> {
        let mut out = HashMap::new();
        for f in files {
            let module = ctx
                .load_module(cudarc::nvrtc::Ptx::from_src(f.ptx.clone()))
                .map_err(drv(f.file.name))?;
            for &name in f.file.functions {
                out.insert(name, module.load_function(name).map_err(drv(name))?);
            }
        }
        for f in &FILES {
            if let Some(missing) = f.functions.iter().find(|n| !out.contains_key(*n)) {
                return Err(DeviceError::Nvrtc(format!(
                    "kernel {missing} was not loaded"
                )));
            }
        }
        Ok(out)
    }

    /// The device's name and compute capability.
    pub fn describe(&self) -> Result<(String, (i32, i32))> {
        Ok((
            self.ctx.name().map_err(drv("device name"))?,
            self.ctx
                .compute_capability()
                .map_err(drv("compute capability"))?,
        ))
    }

    /// The context (for streams and pinned memory).
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The compute stream.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    fn function(&self, name: &str) -> Result<&CudaFunction> {
        self.functions
            .get(name)
            .ok_or_else(|| DeviceError::Nvrtc(format!("kernel {name} not loaded")))
    }

    /// Waits for the compute stream.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(drv("synchronize"))
    }

    /// Uploads `xs` rounded to `dtype`.
    pub fn upload(&self, dtype: StorageDtype, xs: &[f32]) -> Result<DeviceTensor> {
        let data = self
            .stream
            .clone_htod(&dtype.encode(xs))
            .map_err(drv("upload"))?;
        Ok(DeviceTensor { data, dtype })
    }

    /// Uploads a small u32 array (positions, indices).
    pub fn upload_u32(&self, xs: &[u32]) -> Result<CudaSlice<u32>> {
        // A zero-length allocation is not allowed; keep one dummy element.
        let xs: &[u32] = if xs.is_empty() { &[0] } else { xs };
        self.stream.clone_htod(xs).map_err(drv("upload"))
    }

    /// Uploads an f32 buffer (scores).
    pub fn upload_f32(&self, xs: &[f32]) -> Result<CudaSlice<f32>> {
        let xs: &[f32] = if xs.is_empty() { &[0.0] } else { xs };
        self.stream.clone_htod(xs).map_err(drv("upload"))
    }

    /// Downloads `t` as f32.
    pub fn download(&self, t: &DeviceTensor) -> Result<Vec<f32>> {
        let bits = self.stream.clone_dtoh(&t.data).map_err(drv("download"))?;
        Ok(t.dtype.decode(&bits))
    }

    /// Downloads an f32 buffer.
    pub fn download_f32(&self, xs: &CudaSlice<f32>) -> Result<Vec<f32>> {
        self.stream.clone_dtoh(xs).map_err(drv("download"))
    }

    fn alloc_u16(&self, len: usize) -> Result<CudaSlice<u16>> {
        self.stream.alloc_zeros(len.max(1)).map_err(drv("alloc"))
    }

    fn alloc_f32(&self, len: usize) -> Result<CudaSlice<f32>> {
        self.stream.alloc_zeros(len.max(1)).map_err(drv("alloc"))
    }

    /// RoPE of `x` `[heads, n, d]` at `pos` (see `kernels/rope.cu`), into a new tensor.
    #[allow(clippy::too_many_arguments)]
    pub fn rope(
        &self,
        x: &DeviceTensor,
        heads: usize,
        n: usize,
        d: usize,
        pos: &[u32],
        theta: f64,
        interleaved: bool,
    ) -> Result<DeviceTensor> {
        check_len("rope x", x.data.len(), heads * n * d)?;
        check_len("rope positions", pos.len(), n)?;
        let l = layout::rope_launch(heads, n, d)?;
        let pos_d = self.upload_u32(pos)?;
        let inv = self
            .stream
            .clone_htod(&layout::rope_inv_freq(d, theta))
            .map_err(drv("upload"))?;
        let mut y = self.alloc_u16(heads * n * d)?;
        let f = self.function(&format!("rope_{}", x.dtype.suffix()))?;
        let (h, n, d, il) = (
            u32_of("heads", heads)?,
            u32_of("n", n)?,
            u32_of("d", d)?,
            u32::from(interleaved),
        );
        let mut b = self.stream.launch_builder(f);
        b.arg(&x.data)
            .arg(&mut y)
            .arg(&pos_d)
            .arg(&inv)
            .arg(&h)
            .arg(&n)
            .arg(&d)
            .arg(&il);
        // SAFETY: argument types and order match `rope_*`; sizes were checked above.
        unsafe { b.launch(cfg(l)) }.map_err(drv("rope"))?;
        Ok(DeviceTensor {
            data: y,
            dtype: x.dtype,
        })
    }

    /// Gathers rows `idx` of `src` `[heads, m, d]` into `[heads, idx.len(), d]`.
    pub fn gather_rows(
        &self,
        src: &DeviceTensor,
        heads: usize,
        m: usize,
        d: usize,
        idx: &[u32],
    ) -> Result<DeviceTensor> {
        check_len("gather src", src.data.len(), heads * m * d)?;
        let l = layout::rows_launch(heads, m, idx, d, false)?;
        let idx_d = self.upload_u32(idx)?;
        let mut dst = self.alloc_u16(heads * idx.len() * d)?;
        let (h, m, n, d) = (
            u32_of("heads", heads)?,
            u32_of("m", m)?,
            u32_of("n", idx.len())?,
            u32_of("d", d)?,
        );
        let f = self.function("gather_rows")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&src.data)
            .arg(&mut dst)
            .arg(&idx_d)
            .arg(&h)
            .arg(&m)
            .arg(&n)
            .arg(&d);
        // SAFETY: matches `gather_rows`; indices were checked < m.
        unsafe { b.launch(cfg(l)) }.map_err(drv("gather_rows"))?;
        Ok(DeviceTensor {
            data: dst,
            dtype: src.dtype,
        })
    }

    /// Scatters `src` `[heads, idx.len(), d]` over rows `idx` of `dst` `[heads, m, d]`.
    pub fn scatter_rows(
        &self,
        src: &DeviceTensor,
        dst: &mut DeviceTensor,
        heads: usize,
        m: usize,
        d: usize,
        idx: &[u32],
    ) -> Result<()> {
        check_len("scatter src", src.data.len(), heads * idx.len() * d)?;
        check_len("scatter dst", dst.data.len(), heads * m * d)?;
        if src.dtype != dst.dtype {
            return Err(DeviceError::BadArgument("scatter: dtypes differ".into()));
        }
        let l = layout::rows_launch(heads, m, idx, d, true)?;
        let idx_d = self.upload_u32(idx)?;
        let (h, n, m, d) = (
            u32_of("heads", heads)?,
            u32_of("n", idx.len())?,
            u32_of("m", m)?,
            u32_of("d", d)?,
        );
        let f = self.function("scatter_rows")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&src.data)
            .arg(&mut dst.data)
            .arg(&idx_d)
            .arg(&h)
            .arg(&n)
            .arg(&m)
            .arg(&d);
        // SAFETY: matches `scatter_rows`; indices were checked < m and distinct.
        unsafe { b.launch(cfg(l)) }.map_err(drv("scatter_rows"))?;
        Ok(())
    }

    /// The smoothed A^3 score of every document row (`shape.n_doc()` values, on the device).
    pub fn a3_scores(
        &self,
        q: &DeviceTensor,
        k: &DeviceTensor,
        shape: &A3Shape,
        width: usize,
    ) -> Result<CudaSlice<f32>> {
        let s = shape;
        let l = layout::a3_launches(s)?;
        check_len("a3 q", q.data.len(), s.heads * s.question * s.head_dim)?;
        check_len("a3 k", k.data.len(), s.kv_heads * s.total * s.head_dim)?;
        let (ncols, n_doc) = (s.ncols(), s.n_doc());
        let mut logits = self.alloc_f32(s.question * ncols)?;
        let mut row_max = self.alloc_f32(s.question)?;
        let mut row_sum = self.alloc_f32(s.question)?;
        let mut raw = self.alloc_f32(n_doc)?;
        let mut smooth = self.alloc_f32(n_doc)?;
        let u = |what, x| u32_of(what, x);
        let (h, hkv, nq, t, p, d) = (
            u("heads", s.heads)?,
            u("kv heads", s.kv_heads)?,
            u("Q", s.question)?,
            u("T", s.total)?,
            u("P", s.prefix)?,
            u("d", s.head_dim)?,
        );
        let (nc, nd, w) = (u("ncols", ncols)?, u("n_doc", n_doc)?, u("width", width)?);
        let scale = s.scale();
        let st = &self.stream;
        let f = self.function(&format!("a3_logits_{}", q.dtype.suffix()))?;
        let mut b = st.launch_builder(f);
        b.arg(&q.data)
            .arg(&k.data)
            .arg(&mut logits)
            .arg(&h)
            .arg(&hkv)
            .arg(&nq)
            .arg(&t)
            .arg(&p)
            .arg(&d)
            .arg(&scale);
        // SAFETY: the a3 launches match the signatures in a3_score.cu; shapes checked above.
        unsafe { b.launch(cfg(l.logits)) }.map_err(drv("a3_logits"))?;
        let f = self.function("a3_row_stats")?;
        let mut b = st.launch_builder(f);
        b.arg(&logits)
            .arg(&mut row_max)
            .arg(&mut row_sum)
            .arg(&nq)
            .arg(&nc);
        unsafe { b.launch(cfg(l.row_stats)) }.map_err(drv("a3_row_stats"))?;
        if n_doc > 0 {
            let f = self.function("a3_column_scores")?;
            let mut b = st.launch_builder(f);
            b.arg(&logits)
                .arg(&row_max)
                .arg(&row_sum)
                .arg(&mut raw)
                .arg(&nq)
                .arg(&nc);
            unsafe { b.launch(cfg(l.column_scores)) }.map_err(drv("a3_column_scores"))?;
            let f = self.function("moving_average")?;
            let mut b = st.launch_builder(f);
            b.arg(&raw).arg(&mut smooth).arg(&nd).arg(&w);
            unsafe { b.launch(cfg(l.moving_average)) }.map_err(drv("moving_average"))?;
        }
        Ok(smooth)
    }

    /// Indices of the `k` largest of the first `n` `scores`, ties to the lower index,
    /// ascending (`k <= n`).
    pub fn top_k(&self, scores: &CudaSlice<f32>, n: usize, k: usize) -> Result<Vec<u32>> {
        if k > n || n > scores.len() {
            return Err(DeviceError::BadArgument(format!(
                "top_k: k {k} of n {n} ({} scores)",
                scores.len()
            )));
        }
        if k == 0 {
            return Ok(Vec::new());
        }
        let mut out = self.stream.alloc_zeros::<u32>(k).map_err(drv("alloc"))?;
        let (n32, k32) = (u32_of("n", n)?, u32_of("k", k)?);
        let l = Launch {
            grid: (1, 1, 1),
            block: (layout::TOPK_THREADS, 1, 1),
            shared_bytes: 0,
        };
        let f = self.function("topk_rows")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(scores).arg(&n32).arg(&k32).arg(&mut out);
        // SAFETY: matches `topk_rows`; k <= n <= scores.len().
        unsafe { b.launch(cfg(l)) }.map_err(drv("topk_rows"))?;
        self.stream.clone_dtoh(&out).map_err(drv("download"))
    }

    /// Masked attention of `q` `[H, n, d]` at `q_pos` over `k`, `v` `[H_kv, m, d]` at
    /// `k_pos`; returns `[n, H d]` (see `kernels/attention.cu`). The positions come both on
    /// the device and on the host (the host copy is checked before launching).
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        q: &DeviceTensor,
        q_pos: &CudaSlice<u32>,
        k: &DeviceTensor,
        v: &DeviceTensor,
        k_pos: &CudaSlice<u32>,
        shape: &AttentionShape,
        host_q_pos: &[u32],
        host_k_pos: &[u32],
    ) -> Result<DeviceTensor> {
        let s = shape;
        let l = layout::attention_launch(s, host_q_pos, host_k_pos)?;
        check_len("attention q", q.data.len(), s.heads * s.rows * s.head_dim)?;
        check_len(
            "attention k",
            k.data.len(),
            s.kv_heads * s.keys * s.head_dim,
        )?;
        check_len(
            "attention v",
            v.data.len(),
            s.kv_heads * s.keys * s.head_dim,
        )?;
        if q.dtype != k.dtype || k.dtype != v.dtype {
            return Err(DeviceError::BadArgument("attention: dtypes differ".into()));
        }
        let mut out = self.alloc_u16(s.rows * s.heads * s.head_dim)?;
        let u = |what, x| u32_of(what, x);
        let (h, hkv, n, m, d) = (
            u("heads", s.heads)?,
            u("kv heads", s.kv_heads)?,
            u("n", s.rows)?,
            u("m", s.keys)?,
            u("d", s.head_dim)?,
        );
        let scale = s.scale();
        let f = self.function(&format!("attention_{}", q.dtype.suffix()))?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&q.data)
            .arg(q_pos)
            .arg(&k.data)
            .arg(&v.data)
            .arg(k_pos)
            .arg(&mut out)
            .arg(&h)
            .arg(&hkv)
            .arg(&n)
            .arg(&m)
            .arg(&d)
            .arg(&scale);
        // SAFETY: matches `attention_*`; shapes and positions checked by attention_launch.
        unsafe { b.launch(cfg(l)) }.map_err(drv("attention"))?;
        Ok(DeviceTensor {
            data: out,
            dtype: q.dtype,
        })
    }
}
